"""Probes on frozen features: numpy in, numpy out (the adapters wrap them into task protocols)."""
from evalkit.probes import ridge
from evalkit.probes.ridge import ridge_fewshot

__all__ = ["ridge", "ridge_fewshot"]
