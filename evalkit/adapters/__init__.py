"""Task adapters: one module per protocol, registered here (the one place an adapter is listed).

See registry.py for the contract and docs/architecture.md for how to add one.
"""
from evalkit.adapters import fewshot_ridge, finetune, knn, linear_probe, ridge_full  # noqa: F401  (registration)
from evalkit.adapters.registry import ADAPTERS, Adapter, EvalSettings, Outcome, config_from_spec, get, register_adapter

__all__ = ["ADAPTERS", "Adapter", "EvalSettings", "Outcome", "config_from_spec", "get", "register_adapter"]
