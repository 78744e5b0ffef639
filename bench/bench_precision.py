"""Few-shot ridge accuracy at the backend's default matmul precision vs evalkit's float32 solve (run it on a GPU/TPU).

  python bench/bench_precision.py [--classes 1000 --dim 1665 --n_test 10000 --shots 1]

A 1000-class synthetic 1-shot case (ImageNet-like: D = 1665 features, ±1 targets), solved three ways on the default
device: (before) the protocol's jitted solve at JAX's *default* precision — TF32 on recent NVIDIA GPUs, bfloat16
passes on TPUs; (after) the same solve as evalkit runs it, every product at HIGHEST precision; and a float64 numpy
reference on the host. Prints the accuracies and how many test predictions each device solve changes against the
reference. On a CPU all three agree (float32 products are exact there); on accelerators "before" drifts.
About a minute on one GPU, a few on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from evalkit.probes import ridge


def synthetic(n_per_class, num_classes, dim, seed):
  # A common offset (as real pre-logits have) plus weak class structure: the margins between classes are small.
  centers = np.random.default_rng(0).normal(size=(num_classes, dim)).astype(np.float32) * 0.25
  rng = np.random.default_rng(seed)
  y = rng.permutation(np.repeat(np.arange(num_classes), n_per_class))
  x = 3.0 + centers[y] + rng.normal(size=(len(y), dim)).astype(np.float32)
  return x.astype(np.float32), y


def reference_predictions(x_shot, y_shot, x_test, num_classes, l2_reg):
  x = x_shot.astype(np.float64)
  mean, std = x.mean(0), x.std(0) + ridge.STD_EPS
  white = lambda a: np.hstack([(a - mean) / std, np.full((len(a), 1), ridge.BIAS_FEATURE)])
  xs, xt = white(x), white(x_test.astype(np.float64))
  y = 2.0 * np.eye(num_classes)[y_shot] - 1.0
  if len(xs) >= xs.shape[1]:
    w = np.linalg.solve(xs.T @ xs + l2_reg * np.eye(xs.shape[1]), xs.T @ y)
  else:
    w = xs.T @ np.linalg.solve(xs @ xs.T + l2_reg * np.eye(len(xs)), y)
  return np.argmax(xt @ w, axis=1)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--dim", type=int, default=1665)
  parser.add_argument("--n_test", type=int, default=10000)
  parser.add_argument("--shots", type=int, default=1)
  args = parser.parse_args()
  k = args.classes
  x_train, y_train = synthetic(max(args.shots, 2), k, args.dim, seed=1)
  x_test, y_test = synthetic(max(1, args.n_test // k), k, args.dim, seed=2)
  positions = ridge.episode_manifest(y_train, k, (args.shots,), (0,))[(args.shots, 0)]
  x_shot, y_shot = x_train[positions], y_train[positions].astype(np.int32)
  print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}); K={k}, D={args.dim}, "
        f"{args.shots}-shot, n_test={len(x_test)}")

  ref = reference_predictions(x_shot, y_shot, x_test, k, ridge.DEFAULT_L2_REG)
  rows = [("float64 reference (host)", ref, 0.0)]

  def solver(wrap):  # evalkit's fit and predict programs, traced through `wrap`
    fit = jax.jit(wrap(ridge._fit_episode), static_argnames=("num_classes",))
    predict = jax.jit(wrap(ridge._predict_episode), static_argnames=("num_classes",))
    return lambda: np.asarray(predict(x_test, *fit(x_shot, y_shot, np.float32(ridge.DEFAULT_L2_REG), None,
                                                   num_classes=k)[:4], num_classes=k)[0])

  solvers = {"before: default precision": solver(lambda fn: fn),
             "after: evalkit (HIGHEST)": solver(ridge.exact_float32)}
  for label, run in solvers.items():
    run()  # compile
    t = time.perf_counter()
    pred = run()
    rows.append((label, pred, time.perf_counter() - t))
  print(f"{'solve':30s} {'accuracy':>9s} {'changed vs reference':>21s} {'seconds':>8s}")
  for label, pred, seconds in rows:
    print(f"{label:30s} {100 * np.mean(pred == y_test):8.2f}% {100 * np.mean(pred != ref):20.2f}% {seconds:8.3f}")


if __name__ == "__main__":
  main()
