"""Few-shot ridge speed: evalkit vs scikit-learn's RidgeClassifier on the same features and the same protocol.

  python bench/bench_fewshot.py [--classes 1000 --dim 768 --n_test 10000]

(b) shots 1/5/10/25 × seeds 0/1/2 at λ=1024: evalkit's jitted eigendecomposition solve vs sklearn (same whitening, same
    bias feature, same ±1 targets — RidgeClassifier's own encoding — so the accuracies must agree too). Target ≥ 10×.
(c) the same suite with the leave-one-out λ sweep over 16 values vs the single λ. Target ≤ 1.5×.
Timings are medians of repeated warm runs (compilation reported separately); nothing here is asserted.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import RidgeClassifier

from evalkit.probes import ridge


def synthetic_features(n_per_class, num_classes, dim, seed, centers_seed=0):
  centers = np.random.default_rng(centers_seed).normal(size=(num_classes, dim)).astype(np.float32) * 0.35
  rng = np.random.default_rng(seed)
  y = rng.permutation(np.repeat(np.arange(num_classes), n_per_class))
  return centers[y] + rng.normal(size=(len(y), dim)).astype(np.float32), y


def sklearn_suite(x_train, y_train, x_test, y_test, num_classes, shots, seeds):
  accs = {}
  for (k, seed), idx in ridge.episode_manifest(y_train, num_classes, shots, seeds).items():
    x = x_train[idx]
    mean, std = x.mean(0), x.std(0) + 1e-5
    white = lambda a: np.hstack([(a - mean) / std, np.full((len(a), 1), 100.0, np.float32)])
    clf = RidgeClassifier(alpha=1024.0, fit_intercept=False).fit(white(x), y_train[idx])
    accs[(k, seed)] = float(np.mean(clf.predict(white(x_test)) == y_test))
  return accs


def timed(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    t = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times)), out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--classes", type=int, default=1000)
  ap.add_argument("--dim", type=int, default=768)
  ap.add_argument("--n_test", type=int, default=10000)
  ap.add_argument("--train_per_class", type=int, default=30)
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args()
  shots, seeds, k = (1, 5, 10, 25), (0, 1, 2), args.classes
  x_train, y_train = synthetic_features(args.train_per_class, k, args.dim, seed=1)
  x_test, y_test = synthetic_features(max(1, args.n_test // k), k, args.dim, seed=2)
  print(f"features: train {x_train.shape}, test {x_test.shape}, {k} classes; episodes: shots {shots} × seeds {seeds}")

  probe = ridge.RidgeProbe(x_train, y_train, x_test, y_test, num_classes=k)
  grid16 = ridge.LOO_L2_GRID[:16]
  t = time.perf_counter()
  probe.run(shots, seeds, l2_grid=None)
  probe.run(shots, seeds, l2_grid=grid16)
  print(f"evalkit compilation + first runs: {time.perf_counter() - t:.1f} s")
  t_single, eps = timed(lambda: probe.run(shots, seeds, l2_grid=None), args.repeats)
  t_sweep, eps_sweep = timed(lambda: probe.run(shots, seeds, l2_grid=grid16), args.repeats)
  t_sk, sk_accs = timed(lambda: sklearn_suite(x_train, y_train, x_test, y_test, k, shots, seeds), 1)

  ours = {(e.shots, e.seed): e.accuracy for e in eps}
  worst = max(abs(ours[key] - sk_accs[key]) * len(y_test) for key in ours)
  print(f"accuracy agreement with sklearn: max |Δ| = {worst:.0f} test example(s) over {len(ours)} episodes")
  for s in shots:
    print(f"  {s:2d}-shot mean acc: evalkit {np.mean([ours[(s, q)] for q in seeds]):.4f}  "
          f"sklearn {np.mean([sk_accs[(s, q)] for q in seeds]):.4f}")
  print(f"(b) suite at λ=1024: evalkit {t_single:.2f} s, sklearn RidgeClassifier {t_sk:.2f} s "
        f"-> {t_sk / t_single:.1f}x faster (target ≥ 10x)")
  print(f"(c) + LOO sweep over {len(grid16)} λ: {t_sweep:.2f} s -> {t_sweep / t_single:.2f}x the single-λ time "
        f"(target ≤ 1.5x); chosen λ: {sorted({e.loo_l2_reg for e in eps_sweep})}")


if __name__ == "__main__":
  main()
