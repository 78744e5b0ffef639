"""The probe suite against independent references: kNN vs brute force, the logistic probe vs scikit-learn, the
streaming ridge vs the in-memory solve (and across device, chunk and process counts), metrics vs sklearn."""
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from evalkit import distributed, metrics
from evalkit.probes import knn, logistic, ridge_full
import evalkit.probes

from conftest import subprocess_timeout


def one_device():
  return distributed.data_mesh(jax.devices()[:1])


# ----------------------------------------------------------------------------------------------------------------------
# kNN


def brute_force_knn(x_train, y_train, x_test, num_classes, k, temperature):
  """Every similarity in float64, a full stable sort (ties: lower train index), votes summed per class."""
  a = x_train / np.linalg.norm(x_train, axis=1, keepdims=True)
  b = x_test / np.linalg.norm(x_test, axis=1, keepdims=True)
  sims = b.astype(np.float64) @ a.T.astype(np.float64)
  pred = []
  for row in sims:
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
    votes = [0.0] * num_classes
    for j in order:
      votes[y_train[j]] += 1.0 if temperature is None else float(np.exp(row[j] / temperature))
    pred.append(max(range(num_classes), key=lambda c: (votes[c], -c)))  # ties: lower class id
  return np.array(pred)


@pytest.fixture(scope="module")
def knn_data():
  rng = np.random.default_rng(0)
  x_train = rng.normal(size=(700, 16)).astype(np.float32)
  y_train = rng.integers(0, 6, 700)
  x_train[300:320] = x_train[10:30]  # duplicated rows: exactly equal similarities, broken by the lower index
  y_train[300:320] = (y_train[10:30] + 1) % 6
  x_test = rng.normal(size=(150, 16)).astype(np.float32)
  x_test[:10] = x_train[10:20] * 3.0  # their nearest neighbours are the duplicated pairs
  return x_train, y_train, x_test


@pytest.mark.parametrize("k", [1, 10, 20, 200])
@pytest.mark.parametrize("temperature", [0.07, None])
def test_knn_equals_brute_force(knn_data, k, temperature):
  x_train, y_train, x_test = knn_data
  want = brute_force_knn(x_train, y_train, x_test, 6, k, temperature)
  np.testing.assert_array_equal(evalkit.probes.knn_predict(x_train, y_train, x_test, 6, k=k, temperature=temperature),
                                want)


def test_knn_chunks_and_devices_do_not_matter(knn_data):
  """Small train chunks and test blocks (many running top-k merges), on 1 or 8 devices: the same neighbours."""
  x_train, _, x_test = knn_data
  ref_sims, ref_idx = knn.nearest(x_train, x_test, 50, mesh=one_device())
  for chunk, block, mesh in ((64, 8, None), (333, 1, one_device()), (700, 4096, None)):
    sims, idx = knn.nearest(x_train, x_test, 50, mesh=mesh, train_chunk=chunk, test_block=block)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, rtol=0, atol=1e-6)
  # ties really occur in this data and go to the lower index
  assert np.all(ref_idx[:10, 0] == np.arange(10, 20)) and np.all(ref_idx[:10, 1] == np.arange(300, 310))


def test_knn_suite_scores_every_k_from_one_search(knn_data):
  x_train, y_train, x_test = knn_data
  suite = knn.knn_suite(x_train, y_train, x_test, 6, ks=(10, 20))
  for k in (10, 20):
    np.testing.assert_array_equal(suite[f"{k}nn"][:, 0], knn.knn_predict(x_train, y_train, x_test, 6, k=k))
    np.testing.assert_array_equal(suite[f"{k}nn_majority"][:, 0],
                                  brute_force_knn(x_train, y_train, x_test, 6, k, None))
    assert suite[f"{k}nn"].shape == (len(x_test), 5)


# ----------------------------------------------------------------------------------------------------------------------
# Logistic probe


@pytest.fixture(scope="module")
def digits_split():
  x, y = load_digits(return_X_y=True)
  x = ((x - x.mean(0)) / (x.std(0) + 1e-3)).astype(np.float32)
  return x[:1200], y[:1200], x[1200:], y[1200:]


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_logistic_fit_equals_sklearn(digits_split, C):
  """sklearn's LogisticRegression (lbfgs, multinomial, same C): accuracy within 0.2 points, close weights."""
  x, y, xt, yt = digits_split
  w, b = evalkit.probes.logistic_fit(x, y, 10, C=C, tol=1e-6, max_iter=3000)
  sk = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(x, y)
  ours, theirs = np.mean((xt @ w + b).argmax(1) == yt), sk.score(xt, yt)
  assert abs(ours - theirs) <= 0.002, (ours, theirs)
  assert np.linalg.norm(w - sk.coef_.T) / np.linalg.norm(sk.coef_) < 2e-3
  centre = lambda v: v - v.mean()  # softmax is invariant to one shift of every bias; only differences are defined
  np.testing.assert_allclose(centre(b), centre(sk.intercept_), atol=2e-2 * max(1, np.abs(sk.intercept_).max()))


def test_logistic_objective_not_worse_than_sklearn(digits_split):
  """The same objective, C·Σ log-loss + ½‖W‖², reaches a value at least as low as sklearn's optimum."""
  x, y, _, _ = digits_split
  C = 0.1
  def objective(w, b):
    z = x.astype(np.float64) @ w + b
    z -= z.max(1, keepdims=True)
    return C * np.sum(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]) + 0.5 * np.sum(w.astype(np.float64) ** 2)
  w, b = logistic.logistic_fit(x, y, 10, C=C, tol=1e-6, max_iter=3000)
  sk = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(x, y)
  assert objective(w, b) <= objective(sk.coef_.T, sk.intercept_) * (1 + 1e-6)


def test_logistic_path_warm_starts_and_devices(digits_split):
  x, y, xt, yt = digits_split
  problem = logistic.LogisticProblem(x, y, 10)
  path = logistic.logistic_path(problem, [1.0, 0.01, 0.1], tol=1e-6, max_iter=3000)
  cold = logistic.LogisticProblem(x, y, 10, mesh=one_device())
  cold_fit = cold.fit(1.0, tol=1e-6, max_iter=3000)
  np.testing.assert_allclose(path[-1]["W"], cold_fit["W"], atol=2e-3)  # path order is increasing C: last is C=1
  assert problem.iterations[-1] < cold.iterations[-1]  # the warm start saves iterations
  acc = lambda p: np.mean(logistic.scores(p, xt).argmax(1) == yt)
  assert acc(path[-1]) == acc(cold_fit)


# ----------------------------------------------------------------------------------------------------------------------
# Streaming ridge


@pytest.fixture(scope="module")
def ridge_data():
  rng = np.random.default_rng(1)
  x = (rng.normal(size=(5000, 24)) * rng.uniform(0.5, 4, 24) + 2).astype(np.float32)
  y = rng.integers(0, 7, 5000)
  return x, y


def in_memory_ridge(x, y, num_classes, l2_reg):
  xa = np.c_[x, np.ones(len(x))].astype(np.float64)
  targets = 2.0 * np.eye(num_classes)[y] - 1.0
  w = np.linalg.solve(xa.T @ xa + l2_reg * np.eye(xa.shape[1]), xa.T @ targets)
  return w[:-1], w[-1]


def chunked(x, y, size):
  return [(x[s:s + size], y[s:s + size]) for s in range(0, len(x), size)]


def test_ridge_full_equals_in_memory_solve(ridge_data):
  x, y = ridge_data
  for l2_reg in (1e-2, 10.0, 1e4):
    w, b = evalkit.probes.ridge_full_fit(chunked(x, y, 777), 7, l2_reg)
    w_ref, b_ref = in_memory_ridge(x, y, 7, l2_reg)
    scale = np.abs(np.r_[w_ref, b_ref[None]]).max()
    assert np.abs(np.r_[w, b[None]] - np.r_[w_ref, b_ref[None]]).max() / scale <= 1e-4


def test_ridge_full_identical_for_devices_and_chunking(ridge_data):
  x, y = ridge_data
  ref = ridge_full.ridge_full_fit(chunked(x, y, 5000), 7, 10.0, mesh=one_device(), block_rows=256)
  for size, mesh in ((777, None), (1, None), (256, one_device()), (4999, None)):
    got = ridge_full.ridge_full_fit(chunked(x, y, size) if size > 1 else chunked(x[:600], y[:600], 1) +
                                    chunked(x[600:], y[600:], 1000), 7, 10.0, mesh=mesh, block_rows=256)
    assert all(np.array_equal(a, r) for a, r in zip(got, ref)), (size, mesh)


def test_ridge_full_rejects_bad_chunks(ridge_data):
  x, y = ridge_data
  with pytest.raises(ValueError, match="labels must lie"):
    ridge_full.ridge_full_fit([(x, y + 7)], 7, 1.0)
  with pytest.raises(ValueError, match="expected"):
    ridge_full.ridge_full_fit([(x, y), (x[:, :3], y)], 7, 1.0)


_TWO_PROCESS_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    from evalkit.probes import ridge_full
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(5000, 24)) * rng.uniform(0.5, 4, 24) + 2).astype(np.float32)
    y = rng.integers(0, 7, 5000)
    mine = slice(0, 2560) if pid == 0 else slice(2560, 5000)  # process 0 holds whole blocks of 256 rows
    w, b = ridge_full.ridge_full_fit([(x[mine][s:s + 300], y[mine][s:s + 300]) for s in range(0, 2560, 300)], 7, 10.0,
                                     block_rows=256)
    np.savez(out, w=w, b=b)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_ridge_full_identical_for_one_and_two_processes(ridge_data, tmp_path):
  x, y = ridge_data
  ref = ridge_full.ridge_full_fit(chunked(x, y, 1000), 7, 10.0, block_rows=256)
  script = tmp_path / "two.py"
  script.write_text(_TWO_PROCESS_SCRIPT)
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i), str(tmp_path / f"p{i}.npz")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=subprocess_timeout())
    assert p.returncode == 0, err[-3000:]
  for i in range(2):
    with np.load(tmp_path / f"p{i}.npz") as z:
      assert np.array_equal(z["w"], ref[0]) and np.array_equal(z["b"], ref[1])


def test_gcv_matches_brute_force_leave_one_out_shape(ridge_data):
  """GCV from the eigendecomposition equals its definition computed from explicit fits."""
  x, y = ridge_data
  x, y = x[:400], y[:400]
  stats = ridge_full.accumulate(chunked(x, y, 100), 7)
  spectrum = ridge_full.Spectrum.of(stats.gram, stats.xty(), stats.n)
  xa = np.c_[x, np.ones(len(x))].astype(np.float64)
  targets = 2.0 * np.eye(7)[y] - 1.0
  for lam in (0.1, 10.0, 1000.0):
    hat = xa @ np.linalg.solve(xa.T @ xa + lam * np.eye(25), xa.T)
    rss = np.sum((targets - hat @ targets) ** 2)
    want = len(x) * rss / (len(x) - np.trace(hat)) ** 2
    assert spectrum.gcv(lam) == pytest.approx(want, rel=1e-4)


# ----------------------------------------------------------------------------------------------------------------------
# Metrics


def test_metrics_against_sklearn_and_a_hand_computed_ece():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 8, 600)
  labels[:40] = 7  # unbalanced classes: mean-per-class differs from top-1
  logits = rng.normal(size=(600, 8)) + 2.0 * np.eye(8)[labels] * rng.uniform(0, 1, (600, 1))
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  top = np.argsort(-probs, axis=1, kind="stable")
  out = metrics.classification_metrics("top1", top[:, 0], labels, 8, top_indices=top[:, :5], probabilities=probs)
  assert out["top1"]["value"] == pytest.approx(top_k_accuracy_score(labels, probs, k=1))
  assert out["top1.top5"]["value"] == pytest.approx(top_k_accuracy_score(labels, probs, k=5))
  assert out["top1.mean_per_class"]["value"] == pytest.approx(balanced_accuracy_score(labels, top[:, 0]))
  per_class = [np.mean(top[labels == c, 0] == c) for c in range(8)]
  np.testing.assert_allclose(out["top1"]["per_class"], per_class)
  # ECE by hand: 15 equal-width bins (lo, hi], |accuracy − mean confidence| weighted by the bin's share.
  conf, correct, ece = probs.max(1), top[:, 0] == labels, 0.0
  for b in range(15):
    lo, hi = b / 15, (b + 1) / 15
    inside = (conf > lo) & (conf <= hi)
    if inside.any():
      ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
  assert out["top1"]["ece"] == pytest.approx(ece)
  assert sum(out["top1"]["reliability"]["count"]) == 600
  for name in ("top1", "top1.top5", "top1.mean_per_class"):
    m = out[name]
    assert m["ci95"][0] < m["value"] < m["ci95"][1] and m["se"] > 0 and m["n"] == 600


def test_mean_per_class_over_episodes_and_metric_names():
  labels = np.array([0, 0, 0, 1, 2, 2])
  preds = np.array([[0, 0, 1, 1, 2, 0], [0, 1, 1, 1, 2, 2]])
  out = metrics.classification_metrics("5shot", preds, labels, 3)
  want = np.mean([balanced_accuracy_score(labels, p) for p in preds])
  assert out["5shot.mean_per_class"]["value"] == pytest.approx(want)
  assert "5shot.top5" not in out  # no scores given
  assert metrics.metric_parts("5shot.mean_per_class") == ("5shot", "mean_per_class")
  assert metrics.metric_parts("top1_polyak") == ("top1_polyak", "top1")
