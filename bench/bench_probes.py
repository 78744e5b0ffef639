"""The probe suite's speed and memory against scikit-learn, in one run (nothing here is asserted).

  python bench/bench_probes.py [--n 50000 --dim 768 --classes 100 --n_test 10000]

(a) linear probe: the whole C sweep (warm-started optax L-BFGS, one problem on the device) vs sklearn
    `LogisticRegression(solver="lbfgs")` fitted once per C of the same grid; the accuracies at every C are printed
    beside each other (equal accuracy is the condition of the comparison). Goal ≥ 5×. Both are bound by the same
    N·D·K products per iteration, so on a CPU the ratio is near the iteration-count ratio; the device pays off on
    an accelerator, where sklearn cannot run.
(b) kNN: every k of DINOv2's {10, 20, 100, 200} from one chunked neighbour search vs sklearn
    `KNeighborsClassifier(algorithm="brute", metric="cosine")` with the same exp(sim/0.07) weights, per k (and vs one
    sklearn `kneighbors` at k=200, the best a sklearn user could do). Goal ≥ 5×.
(c) streaming ridge: peak RSS of `ridge_full_fit` over a generator of chunks at N and 4·N rows, each in a fresh
    process — flat memory means the ratio stays ≈ 1 while the data grows 4×.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

SKLEARN_TOL = 1e-4  # sklearn's default; both stop on max |gradient| of the same scaled objective
RSS_SCRIPT = """
import resource, sys, numpy as np
from evalkit.probes import ridge_full
n, dim, classes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def chunks():
  for s in range(0, n, 8192):
    rng = np.random.default_rng(s)
    m = min(8192, n - s)
    yield rng.normal(size=(m, dim)).astype(np.float32), rng.integers(0, classes, m)
w, b = ridge_full.ridge_full_fit(chunks(), classes, 10.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def synthetic(n, num_classes, dim, seed, spread=0.12):
  centers = np.random.default_rng(0).normal(size=(num_classes, dim)).astype(np.float32) * spread
  rng = np.random.default_rng(seed)
  y = rng.integers(0, num_classes, n)
  return centers[y] + rng.normal(size=(n, dim)).astype(np.float32), y


def linear_probe(x, y, xt, yt, classes, grid):
  from sklearn.linear_model import LogisticRegression
  from evalkit.probes import logistic
  t = time.perf_counter()
  problem = logistic.LogisticProblem(x, y, classes)
  path = logistic.logistic_path(problem, grid, tol=SKLEARN_TOL)
  first_s = time.perf_counter() - t
  t = time.perf_counter()
  logistic.logistic_path(logistic.LogisticProblem(x, y, classes), grid, tol=SKLEARN_TOL)  # warm: compiled
  ours_s = time.perf_counter() - t
  ours = [np.mean(logistic.scores(p, xt).argmax(1) == yt) for p in path]
  t = time.perf_counter()
  theirs = [LogisticRegression(C=C, max_iter=1000, tol=SKLEARN_TOL).fit(x, y).score(xt, yt) for C in sorted(grid)]
  sk_s = time.perf_counter() - t
  print(f"(a) linear probe, {len(grid)} values of C on {x.shape[0]}x{x.shape[1]}, {classes} classes")
  for C, a, b, it in zip(sorted(grid), ours, theirs, problem.iterations):
    print(f"    C={C:<10.3g} evalkit {100 * a:6.2f}%  sklearn {100 * b:6.2f}%  (L-BFGS iterations {it})")
  print(f"    evalkit {ours_s:.1f} s warm ({first_s:.1f} s with compilation)  sklearn {sk_s:.1f} s  ->  "
        f"{sk_s / ours_s:.1f}x faster ({sk_s / first_s:.1f}x counting compilation)")


def knn_probe(x, y, xt, yt, classes, ks):
  from sklearn.neighbors import KNeighborsClassifier
  from evalkit.probes import knn
  t = time.perf_counter()
  suite = knn.knn_suite(x, y, xt, classes, ks)
  ours_s = time.perf_counter() - t
  weights = lambda d: np.exp((1.0 - d) / knn.DEFAULT_TEMPERATURE)  # cosine distance = 1 − similarity
  t = time.perf_counter()
  theirs = {k: KNeighborsClassifier(k, algorithm="brute", metric="cosine", weights=weights).fit(x, y).predict(xt)
            for k in ks}
  sk_s = time.perf_counter() - t
  t = time.perf_counter()
  KNeighborsClassifier(max(ks), algorithm="brute", metric="cosine").fit(x, y).kneighbors(xt)
  one_s = time.perf_counter() - t
  print(f"(b) kNN, k in {list(ks)}: {len(x)} train x {len(xt)} test x {x.shape[1]}")
  for k in ks:
    print(f"    k={k:<4d} evalkit {100 * np.mean(suite[f'{k}nn'][:, 0] == yt):6.2f}%  "
          f"sklearn {100 * np.mean(theirs[k] == yt):6.2f}%  (predictions differing: "
          f"{np.sum(suite[f'{k}nn'][:, 0] != theirs[k])})")
  print(f"    evalkit {ours_s:.1f} s (all k, weighted and majority)  sklearn {sk_s:.1f} s per-k  ->  "
        f"{sk_s / ours_s:.1f}x faster;  one sklearn kneighbors(k={max(ks)}) alone {one_s:.1f} s -> "
        f"{one_s / ours_s:.1f}x")


def ridge_memory(n, dim, classes):
  rss = []
  for rows in (n, 4 * n):
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(rows), str(dim), str(classes)], capture_output=True,
                         text=True, check=True)
    rss.append(float(out.stdout.split()[-1]))
  raw = 4 * n * dim * 4 / 2**20
  print(f"(c) streaming ridge peak RSS: N={n}: {rss[0]:.0f} MB, N={4 * n}: {rss[1]:.0f} MB -> ratio "
        f"{rss[1] / rss[0]:.2f} (the 4N features alone would be {raw:.0f} MB)")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--n", type=int, default=50000)
  parser.add_argument("--n_test", type=int, default=10000)
  parser.add_argument("--dim", type=int, default=768)
  parser.add_argument("--classes", type=int, default=100)
  parser.add_argument("--num_C", type=int, default=5, help="values of C, log-spaced in [1e-4, 1]")
  parser.add_argument("--only", choices=["linear", "knn", "ridge"], default=None)
  args = parser.parse_args()
  x, y = synthetic(args.n, args.classes, args.dim, seed=1)
  xt, yt = synthetic(args.n_test, args.classes, args.dim, seed=2)
  if args.only in (None, "linear"):
    linear_probe(x, y, xt, yt, args.classes, tuple(10.0 ** np.linspace(-4, 0, args.num_C)))
  if args.only in (None, "knn"):
    knn_probe(x, y, xt, yt, args.classes, (10, 20, 100, 200))
  if args.only in (None, "ridge"):
    ridge_memory(args.n, args.dim, args.classes)


if __name__ == "__main__":
  main()
