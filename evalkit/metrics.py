"""Classification metrics of every adapter, from per-item outcomes: top-1, top-5, mean-per-class, per-class, ECE.

Every metric comes in evalkit's one shape {value, se, ci95, n} (docs/protocols.md, "Metrics"). Rows are episodes
(few-shot seeds; one row for a single fitted model), columns test items; intervals combine the spread over episodes
with a bootstrap over test items (`stats.accuracy_interval`), so a 1-row metric gets the plain item bootstrap.

  * top-k: the label is among the k highest scores (sklearn `top_k_accuracy_score`);
  * mean-per-class: the mean over classes present in the test split of their accuracy (sklearn
    `balanced_accuracy_score`; the official metric of Pets, Flowers, Caltech-101, Aircraft). As a per-item mean it is
    Σ_i w_i·correct_i with w_i = 1 / (C·n_c(i)), C the classes present — so the same bootstrap gives its interval;
  * ECE: expected calibration error of the max-probability confidence over `ECE_BINS` equal-width bins,
    Σ_b (n_b / n)·|accuracy_b − confidence_b| (Guo et al. 2017, "On Calibration of Modern Neural Networks").
"""
from __future__ import annotations

import numpy as np

from evalkit import stats

TOP_K = 5
ECE_BINS = 15
STATISTICS = ("top5", "mean_per_class")  # derived metric `<base>.<statistic>` beside each base (top-1) metric


def top_classes(scores: np.ndarray, k: int = TOP_K) -> np.ndarray:
  """(n, min(k, K)) classes by decreasing score, best first; equal scores rank the lower class id first (as argmax)."""
  return np.argsort(-np.asarray(scores), axis=1, kind="stable")[:, :k].astype(np.int32)


def class_weights(labels: np.ndarray) -> np.ndarray:
  """Per-item weights whose item mean of correct·weight is the mean-per-class accuracy: n / (C · n_class)."""
  labels = np.asarray(labels)
  classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
  return len(labels) / (len(classes) * counts[inverse])


def per_class_accuracy(correct: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
  """Accuracy of each class id (mean over episodes); None for a class absent from the test split."""
  per_item = np.atleast_2d(np.asarray(correct, np.float64)).mean(axis=0)
  labels = np.asarray(labels)
  sums = np.bincount(labels, weights=per_item, minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  return [float(s / c) if c else None for s, c in zip(sums, counts)]


def in_top_k(top_indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """(…, n) whether each label is among its item's top indices (…, n, k)."""
  return np.any(np.asarray(top_indices) == np.asarray(labels)[..., None], axis=-1)


def interval(values: np.ndarray) -> dict:
  """{value, se, ci95, n} of the mean over items (and episodes) of per-item values (episodes × items)."""
  values = np.atleast_2d(np.asarray(values, np.float64))
  out = stats.accuracy_interval(values)
  return {"value": out["value"], "se": out["se"], "ci95": out["ci95"], "n": int(values.shape[1])}


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
  """ECE and the reliability diagram's bins (count, mean confidence, accuracy) of one model's test probabilities."""
  probabilities = np.asarray(probabilities, np.float64)
  confidence = probabilities.max(axis=1)
  correct = (probabilities.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
  # Bin b holds confidences in (b/B, (b+1)/B]; a confidence of exactly 0 (impossible for K ≥ 1) would go to bin 0.
  which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  count = np.bincount(which, minlength=bins)
  conf = np.bincount(which, weights=confidence, minlength=bins)
  acc = np.bincount(which, weights=correct, minlength=bins)
  nonempty = count > 0
  ece = float(np.sum(np.abs(acc[nonempty] - conf[nonempty])) / len(labels))
  mean = lambda s: [float(v / c) if c else None for v, c in zip(s, count)]
  return {"ece": ece, "bins": bins, "count": count.tolist(), "confidence": mean(conf), "accuracy": mean(acc)}


def classification_metrics(name: str, predictions: np.ndarray, labels: np.ndarray, num_classes: int, *,
                           top_indices: np.ndarray | None = None, probabilities: np.ndarray | None = None) -> dict:
  """The metrics of one base metric `name`: {name: top-1 (+ per_class, ece, reliability), name.mean_per_class,
  name.top5 (when `top_indices` are given and there are more than 5 classes)}.

  predictions: (E, n) or (n,) labels; top_indices: (E, n, k) or (n, k) highest-scoring classes, best first;
  probabilities: (n, K) of a single model (E = 1), for calibration.
  """
  predictions = np.atleast_2d(predictions)
  labels = np.asarray(labels)
  correct = predictions == labels[None]
  top1 = {**interval(correct), "per_class": per_class_accuracy(correct, labels, num_classes)}
  if probabilities is not None:
    reliability = calibration(probabilities, labels)
    top1.update(ece=reliability.pop("ece"), reliability=reliability)
  out = {name: top1, f"{name}.mean_per_class": interval(correct * class_weights(labels)[None])}
  if top_indices is not None and num_classes > TOP_K:
    hits = in_top_k(np.asarray(top_indices).reshape(*predictions.shape, -1)[..., :TOP_K], labels)
    out[f"{name}.top5"] = interval(hits)
  return out


def derived_names(base: str, num_classes: int | None = None, *, scores: bool = True) -> list[str]:
  """The metric names `classification_metrics` writes beside `base`."""
  names = [f"{base}.mean_per_class"]
  if scores and (num_classes is None or num_classes > TOP_K):
    names.append(f"{base}.top5")
  return names


def metric_parts(metric: str) -> tuple[str, str]:
  """("10shot", "mean_per_class") of "10shot.mean_per_class"; ("10shot", "top1") of "10shot"."""
  base, _, statistic = metric.partition(".")
  return (base, statistic) if statistic in STATISTICS else (metric, "top1")
