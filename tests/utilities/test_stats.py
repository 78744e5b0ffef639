"""Uncertainty estimates: coverage of the nominal 95% intervals on simulated data."""
import numpy as np

from evalkit import stats


def test_bootstrap_interval_covers_the_truth_at_the_nominal_rate():
  rng = np.random.default_rng(0)
  covered = 0
  for i in range(200):
    sample = rng.random(400) < 0.7
    lo, hi = stats.bootstrap_interval(sample, resamples=500, seed=i)["ci95"]
    covered += lo <= 0.7 <= hi
  assert 0.90 <= covered / 200 <= 0.99


def test_fewshot_interval_covers_the_truth_at_the_nominal_rate():
  """Simulated few-shot evaluations: items of varying difficulty, 3 episodes each shifting accuracy a little."""
  rng = np.random.default_rng(1)
  truth, covered, sims = 0.7, 0, 200
  for i in range(sims):
    easiness = rng.beta(7, 3, size=300)  # per-item success probability, mean 0.7
    episode_shift = rng.normal(0, 0.02, size=3)
    correct = rng.random((3, 300)) < np.clip(easiness[None] + episode_shift[:, None], 0, 1)
    ci = stats.accuracy_interval(correct, resamples=300, seed=i)["ci95"]
    covered += ci[0] <= truth <= ci[1]
  assert 0.91 <= covered / sims <= 0.99, covered / sims
