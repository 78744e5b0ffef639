"""Probes on frozen features: numpy in, numpy out (the adapters wrap them into task protocols).

  ridge        big_vision's few-shot ridge (`ridge_fewshot`)
  knn          DINOv2's kNN classifier (`knn_predict`)
  logistic     the full-data linear probe, sklearn's objective (`logistic_fit`)
  ridge_full   the streaming closed-form ridge on a whole split (`ridge_full_fit`)
"""
from evalkit.probes import knn, logistic, ridge, ridge_full
from evalkit.probes.knn import knn_predict
from evalkit.probes.logistic import logistic_fit
from evalkit.probes.ridge import ridge_fewshot
from evalkit.probes.ridge_full import ridge_full_fit

__all__ = ["knn", "knn_predict", "logistic", "logistic_fit", "ridge", "ridge_fewshot", "ridge_full",
           "ridge_full_fit"]
