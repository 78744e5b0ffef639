"""Multinomial logistic regression on frozen features — the full-data linear probe (docs/protocols.md, "Linear probe").

The objective is scikit-learn's `LogisticRegression(C=C)` (multinomial, L2, bias unpenalised):
    C · Σ_i log-loss(x_i W + b, y_i) + ½ ‖W‖²,
minimised here in the equivalent scaled form  (1/N) Σ_i log-loss + ‖W‖² / (2 C N)  (sklearn's lbfgs solver scales it
the same way), by full-batch L-BFGS (`optax.lbfgs` with its zoom line search) in float32 at the highest matmul
precision. The feature rows are sharded over the devices of a mesh (padding rows carry weight 0), so the solve scales
with the devices and fits ImageNet's 1.28M rows; W and b are replicated. A path over C warm-starts every solve from
the previous one, which is what makes a 45-value sweep (DINOv2 `eval/log_regression.py`) cheap.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from evalkit import distributed
from evalkit.probes.ridge import exact_float32

DINOV2_C_GRID = tuple(float(c) for c in 10.0 ** np.linspace(-6, 5, 45))  # DINOv2's sweep: 45 values, 1e-6 ... 1e5
MAX_ITER = 1000
TOL = 1e-5  # on max |gradient| of the scaled objective, as sklearn's lbfgs `tol` (scipy's pgtol)


def _objective(params, x, y, weight, l2):
  logits = x @ params["W"] + params["b"]
  losses = jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  return jnp.sum(weight * losses) + 0.5 * l2 * jnp.sum(params["W"] ** 2)


@functools.partial(jax.jit, static_argnames=("max_iter",))
@exact_float32
def _minimise(params, x, y, weight, l2, tol, *, max_iter):
  """L-BFGS until max |g| ≤ tol or max_iter; returns (params, iterations, max |g|)."""
  fun = lambda p: _objective(p, x, y, weight, l2)
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(fun)

  def step(carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=fun)
    return optax.apply_updates(p, updates), state

  def gradient_size(state):
    return otu.tree_max(jax.tree.map(jnp.abs, otu.tree_get(state, "grad")))

  def keep_going(carry):
    _, state = carry
    count = otu.tree_get(state, "count")
    return (count == 0) | ((count < max_iter) & (gradient_size(state) > tol))

  params, state = jax.lax.while_loop(keep_going, step, (params, opt.init(params)))
  return params, otu.tree_get(state, "count"), gradient_size(state)


class LogisticProblem:
  """Training rows placed on the mesh once; `fit(C, init)` solves for one C (warm-started from `init`)."""

  def __init__(self, x, y, num_classes: int, *, mesh: Mesh | None = None):
    mesh = mesh if mesh is not None else distributed.data_mesh(jax.local_devices())
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
    self.n, self.dim, self.num_classes = len(x), x.shape[1], int(num_classes)
    rows = math.ceil(self.n / mesh.devices.size) * mesh.devices.size
    weight = np.zeros(rows, np.float32)
    weight[: self.n] = 1.0 / self.n
    put_rows = lambda a: jax.device_put(distributed.pad_rows(a, rows), NamedSharding(mesh, P(distributed.DATA_AXIS)))
    self.x, self.y, self.weight = put_rows(x), put_rows(y), put_rows(weight)
    self._replicated = NamedSharding(mesh, P())
    self.iterations: list[int] = []  # per fit, for reports and benchmarks

  def zeros(self) -> dict:
    return {"W": np.zeros((self.dim, self.num_classes), np.float32), "b": np.zeros(self.num_classes, np.float32)}

  def fit(self, C: float, init: dict | None = None, *, max_iter: int = MAX_ITER, tol: float = TOL) -> dict:
    if not C > 0:
      raise ValueError(f"C must be positive, got {C}")
    params = jax.device_put(init if init is not None else self.zeros(), self._replicated)
    l2 = np.float32(1.0 / (C * self.n))
    params, count, _ = _minimise(params, self.x, self.y, self.weight, l2, np.float32(tol), max_iter=max_iter)
    self.iterations.append(int(count))
    return {k: np.asarray(v) for k, v in params.items()}


def logistic_fit(x, y, num_classes: int, C: float = 1.0, *, mesh: Mesh | None = None, max_iter: int = MAX_ITER,
                 tol: float = TOL) -> tuple[np.ndarray, np.ndarray]:
  """(W (D, K), b (K,)) minimising C·Σ log-loss + ½‖W‖² (sklearn `LogisticRegression`'s objective and C)."""
  params = LogisticProblem(x, y, num_classes, mesh=mesh).fit(C, max_iter=max_iter, tol=tol)
  return params["W"], params["b"]


def logistic_path(problem: LogisticProblem, Cs: Sequence[float], **fit_kw) -> list[dict]:
  """One solution per C, in increasing C, each warm-started from the previous (stronger-regularised) one."""
  out, params = [], None
  for C in sorted(Cs):
    params = problem.fit(C, params, **fit_kw)
    out.append(params)
  return out


def scores(params: dict, x) -> np.ndarray:
  """Logits of rows `x` (float32, highest precision, in blocks)."""
  return np.concatenate([np.asarray(_logits(params["W"], params["b"], x[s:s + 65536]))
                         for s in range(0, len(x), 65536)]) if len(x) else np.zeros((0, len(params["b"])), np.float32)


@jax.jit
@exact_float32
def _logits(w, b, x):
  return x @ w + b


def softmax(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)
