"""Few-shot ridge: the jitted protocol against a straightforward float64 numpy transcription of docs/protocols.md,
"Few-shot ridge"."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from evalkit.probes import ridge


def reference_episode(x_train, y_train, x_test, num_classes, shots, seed, l2_reg):
  """The protocol written out plainly, in float64, solving (XᵀX + λI) W = XᵀY directly (no eigendecomposition)."""
  rng = np.random.default_rng(seed)
  idx = []
  for c in range(num_classes):
    idx.extend(rng.permutation(np.where(y_train == c)[0])[:shots])
  x = x_train[idx].astype(np.float64)
  mean, std = x.mean(0), x.std(0) + 1e-5
  white = lambda a: np.hstack([(a - mean) / std, np.full((len(a), 1), 100.0)])
  xs, xt = white(x), white(x_test.astype(np.float64))
  y = 2.0 * np.eye(num_classes)[y_train[idx]] - 1.0
  w = np.linalg.solve(xs.T @ xs + l2_reg * np.eye(xs.shape[1]), xs.T @ y)
  return np.argmax(xt @ w, axis=1)


def blobs(n_per_class, num_classes, dim, seed, centers_seed=0):
  """Well-conditioned synthetic features: Gaussian class clusters with overlap (accuracy well inside (0, 1)).

  Train and test splits share `centers_seed` and differ in `seed`.
  """
  centers = np.random.default_rng(centers_seed).normal(size=(num_classes, dim)) * 0.6
  rng = np.random.default_rng(seed)
  y = np.repeat(np.arange(num_classes), n_per_class)
  rng.shuffle(y)
  return (centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


@pytest.mark.parametrize("dim", [16, 200])  # N ≥ D (eigh of XᵀX) and N < D (eigh of XXᵀ) branches
def test_ridge_matches_float64_reference(dim):
  x_train, y_train = blobs(40, 10, dim, seed=0)
  x_test, y_test = blobs(60, 10, dim, seed=1)
  shots, seeds = (1, 5, 10), (0, 1, 2)
  accs = ridge.ridge_fewshot(x_train, y_train, x_test, y_test, num_classes=10, shots=shots, seeds=seeds)
  assert set(accs) == {(k, s) for k in shots for s in seeds}
  for (k, s), acc in accs.items():
    pred = reference_episode(x_train, y_train, x_test, 10, k, s, 1024.0)
    n_correct_ref = int(np.sum(pred == y_test))
    assert abs(round(acc * len(y_test)) - n_correct_ref) <= 1, (k, s, acc, n_correct_ref / len(y_test))
  # Sanity that the check has teeth: 10-shot clearly beats chance and 1-shot.
  mean = lambda k: np.mean([accs[(k, s)] for s in seeds])
  assert mean(10) > 0.4 and mean(10) > mean(1)


def test_episodes_follow_protocol_and_are_nested():
  y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 1])
  m = ridge.episode_manifest(y, 3, shots=(1, 2, 3), seeds=(0, 7))
  rng = np.random.default_rng(7)
  perms = [rng.permutation(np.flatnonzero(y == c)) for c in range(3)]
  np.testing.assert_array_equal(m[(2, 7)], np.concatenate([p[:2] for p in perms]))
  for seed in (0, 7):
    for c in range(3):  # nested: the 1-shot example of class c is the first of its 2- and 3-shot examples
      by_class = {k: [i for i in m[(k, seed)] if y[i] == c] for k in (1, 2, 3)}
      assert by_class[2][:1] == by_class[1] and by_class[3][:2] == by_class[2]
  assert not np.array_equal(m[(3, 0)], m[(3, 7)])


def brute_force_loo_error(x, y, num_classes, l2_reg):
  """Refit the ridge without each example in turn (on the episode's whitened, biased features)."""
  targets = 2.0 * np.eye(num_classes)[y] - 1.0
  wrong = 0
  for i in range(len(x)):
    keep = np.arange(len(x)) != i
    xk = x[keep]
    w = np.linalg.solve(xk.T @ xk + l2_reg * np.eye(x.shape[1]), xk.T @ targets[keep])
    wrong += int(np.argmax(x[i] @ w) != y[i])
  return wrong / len(x)


@pytest.mark.parametrize("dim", [6, 40])
def test_loo_error_equals_brute_force(dim):
  x_train, y_train = blobs(12, 4, dim, seed=3)
  x_test, y_test = blobs(5, 4, dim, seed=4)
  grid = (2.0**-3, 1.0, 8.0, 64.0, 1024.0)
  probe = ridge.RidgeProbe(x_train, y_train, x_test, y_test, num_classes=4)
  ep = probe.run(shots=(6,), seeds=(0,), l2_grid=grid)[0]
  xs = x_train[ep.train_positions].astype(np.float64)
  mean, std = xs.mean(0), xs.std(0) + 1e-5
  xw = np.hstack([(xs - mean) / std, np.full((len(xs), 1), 100.0)])
  expected = [brute_force_loo_error(xw, y_train[ep.train_positions], 4, lam) for lam in grid]
  np.testing.assert_allclose(ep.loo_errors, expected, atol=1.5 / len(xs))
  assert len(set(expected)) > 1  # the grid does discriminate on this case
  best = max(i for i, v in enumerate(expected) if v == min(expected))
  assert ep.loo_l2_reg == grid[best]


def test_digits_raw_pixels_fewshot_is_sane():
  digits = load_digits()
  x, y = digits.data.astype(np.float32), digits.target
  accs = ridge.ridge_fewshot(x[:1297], y[:1297], x[1297:], y[1297:], num_classes=10, shots=(1, 10), seeds=(0, 1))
  ten = np.mean([accs[(10, s)] for s in (0, 1)])
  one = np.mean([accs[(1, s)] for s in (0, 1)])
  assert 0.70 < ten <= 1.0 and one < ten, accs  # measured: 1-shot ≈ 0.58, 10-shot ≈ 0.78


def test_summary_reports_mean_and_std_over_seeds():
  x_train, y_train = blobs(30, 5, 12, seed=5)
  x_test, y_test = blobs(20, 5, 12, seed=6)
  eps = ridge.RidgeProbe(x_train, y_train, x_test, y_test, num_classes=5).run(shots=(5,), seeds=(0, 1, 2))
  s = ridge.summarize(eps)["5shot"]
  accs = [ep.accuracy for ep in eps]
  assert s["value"] == pytest.approx(np.mean(accs)) and s["std"] == pytest.approx(np.std(accs))
  assert set(s["loo"]["l2_reg"].values()) <= set(ridge.LOO_L2_GRID)


def test_solver_runs_every_product_at_highest_precision():
  """Every dot of the compiled ridge solve (whitening, Gram, eigh projections, LOO, test scores) is HIGHEST precision.

  On CPU float32 products are exact at any setting, so accuracy tests cannot see this; on GPUs the default is TF32
  and on TPUs bfloat16 passes, which change 1-shot ImageNet predictions. The lowered program says what will run.
  """
  import re
  x_train, y_train = blobs(6, 4, 12, seed=0)
  x_test, _ = blobs(5, 4, 12, seed=1)
  probe = ridge.RidgeProbe(x_train, y_train, num_classes=4)
  grid = np.asarray(ridge.LOO_L2_GRID, np.float32)
  for n in (8, 20):  # both branches: N < D + 1 (eigh of XXᵀ) and N ≥ D + 1 (eigh of XᵀX)
    positions = np.arange(n)
    fit = probe._fit.lower(x_train[positions], y_train[positions].astype(np.int32), np.float32(1.0), grid,
                           num_classes=4)
    solution = probe._fit(x_train[positions], y_train[positions].astype(np.int32), np.float32(1.0), grid,
                          num_classes=4)[:4]
    predict = probe._predict.lower(x_test[:16], *solution, num_classes=4)  # rows divisible by the devices
    dots = [line for low in (fit, predict) for line in low.as_text().splitlines() if "dot_general" in line]
    assert len(dots) >= 6
    assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots), [d for d in dots if "HIGHEST" not in d]
  # The check itself can fail: the same solve traced without the wrapper carries default precision.
  import jax
  plain = jax.jit(ridge._fit_episode, static_argnames=("num_classes",))
  text = plain.lower(x_train, y_train.astype(np.int32), np.float32(1.0), None, num_classes=4).as_text()
  assert not re.search(r"precision = \[HIGHEST", text)


def test_episodes_do_not_depend_on_the_device_count():
  """Each episode is fitted on its k-shot set alone, replicated on every device, and only the features it scores are
  split across devices: on raw digits pixels (whose LOO curve at small λ amplifies float rounding) every prediction,
  top-5, LOO error, LOO-chosen λ and accuracy is the same on 1 device as on all of this session's 8. When the fit
  and the sharded test scoring were one program, 8 of 12 LOO curves, one chosen λ and 3 LOO accuracies changed."""
  import jax
  from jax.sharding import Mesh
  digits = load_digits()
  x, y = digits.data.astype(np.float32), digits.target
  runs = [ridge.RidgeProbe(x[:1297], y[:1297], x[1297:], y[1297:], num_classes=10,
                           mesh=Mesh(np.array(devices), ("data",))).run((1, 5, 10, 25), (0, 1, 2))
          for devices in (jax.devices()[:1], jax.devices())]
  assert len(jax.devices()) > 1
  for one, many in zip(*runs):
    assert np.array_equal(one.predictions, many.predictions) and np.array_equal(one.top_classes, many.top_classes)
    assert (one.loo_errors, one.loo_l2_reg, one.loo_accuracy) == (many.loo_errors, many.loo_l2_reg, many.loo_accuracy)
