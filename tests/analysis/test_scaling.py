"""Scaling studies: the law fit, the Pareto frontier, the claims, and a `--quick` sweep end to end."""
import dataclasses
import json

import numpy as np
import pytest

from evalkit import results
from evalkit.train import flops
from evalkit.analysis import scaling
from evalkit.studies import sweep
from evalkit.models import vit
from conftest import ONE_DEVICE, error_lines, run_cli

TRUE_LAW = {"a": 40.0, "b": 0.2, "c": 0.08, "d": 3e10}


def test_law_fit_recovers_known_parameters_from_noisy_points():
  rng = np.random.default_rng(0)
  compute = np.geomspace(1e9, 1e15, 16)
  clean = scaling.law(compute, **TRUE_LAW)
  assert clean.max() < 0.9 and clean.min() > 0.1  # a realistic error range: saturating at both ends
  fit = scaling.fit_law(compute, clean + rng.normal(0, 0.004, compute.shape), bootstrap=300)
  assert fit.r2 > 0.99 and fit.n == 16 and fit.bootstrap_samples > 250
  for name, true in TRUE_LAW.items():
    lo, hi = fit.ci95[name]
    assert lo <= true <= hi, (name, true, fit.ci95[name])
  assert abs(fit.b - TRUE_LAW["b"]) < 0.04 and abs(fit.c - TRUE_LAW["c"]) < 0.02
  # The CIs are informative, not the whole box the optimizer may search.
  assert fit.ci95["b"][1] - fit.ci95["b"][0] < 0.15
  # Without noise the least-squares fit is exact.
  exact = scaling.fit_law(compute, clean, bootstrap=0)
  for name, true in TRUE_LAW.items():
    assert getattr(exact, name) == pytest.approx(true, rel=1e-3), name


def test_law_fit_bootstrap_intervals_cover_the_truth():
  """Over 12 noise draws the 95% intervals hold the true exponent and floor about as often as they should."""
  compute = np.geomspace(1e9, 1e15, 16)
  clean = scaling.law(compute, **TRUE_LAW)
  covered = {"b": 0, "c": 0}
  for seed in range(12):
    noisy = clean + np.random.default_rng(100 + seed).normal(0, 0.004, compute.shape)
    fit = scaling.fit_law(compute, noisy, bootstrap=150, seed=seed)
    for k in covered:
      covered[k] += fit.ci95[k][0] <= TRUE_LAW[k] <= fit.ci95[k][1]
  assert min(covered.values()) >= 9, covered


def test_law_fit_needs_five_points():
  with pytest.raises(scaling.FitError, match="at least 5"):
    scaling.fit_law([1e9, 1e10, 1e11, 1e12], [0.5, 0.4, 0.3, 0.25])


def test_pareto_frontier_hand_made():
  compute = [1, 2, 2, 3, 4, 5, 5, 6]
  error = [0.9, 0.8, 0.7, 0.75, 0.6, 0.65, 0.6, 0.5]
  # (2, 0.8) loses to (2, 0.7) at equal compute; (3, 0.75) and both points at 5 are no better than (4, 0.6).
  assert scaling.pareto_frontier(compute, error).tolist() == [0, 2, 4, 7]
  order = np.random.default_rng(1).permutation(len(compute))
  shuffled = scaling.pareto_frontier(np.take(compute, order), np.take(error, order))
  assert sorted(order[shuffled].tolist()) == [0, 2, 4, 7]


def _grid(error_of, se=0.005):
  """Points of a 2-model × 2-data-size × 2-length grid with errors from `error_of(params, data, seen)`."""
  pts = []
  for model, params in (("small", 1000), ("large", 8000)):
    for n in (100, 1000):
      for seen in (500, 1000):
        pts.append(scaling.Point(f"{model}_{n}_{seen}", model, params, n, seen, 6.0 * params * seen,
                                 error_of(params, n, seen), se=se))
  return pts


def test_claims_follow_the_numbers():
  # Paper-like: error falls with size; only the large model gains from data and from longer training.
  paper_like = _grid(lambda p, n, s: 0.5 - 0.1 * (p > 1000) - (0.1 * (n > 100) + 0.05 * (s > 500)) * (p > 1000))
  verdicts = {c.claim: c.verdict for c in scaling.claims(paper_like)}
  assert set(verdicts.values()) == {"holds"}, verdicts
  # Reversed: the small model is better and gains more.
  reversed_ = _grid(lambda p, n, s: 0.3 + 0.1 * (p > 1000) - (0.1 * (n > 100) + 0.05 * (s > 500)) * (p == 1000))
  verdicts = {c.claim: c.verdict for c in scaling.claims(reversed_)}
  assert set(verdicts.values()) == {"does not hold"}, verdicts
  # The paper-like pattern drowned in noise (se 20 points) proves nothing either way.
  faint = _grid(lambda p, n, s: 0.5 - 0.001 * (p > 1000) * (1 + (n > 100) + (s > 500)), se=0.2)
  noisy = [c.verdict for c in scaling.claims(faint)]
  assert noisy == ["mixed", "inconclusive (within noise)", "inconclusive (within noise)"], noisy


def test_sweep_config_lengths_cells_and_validation(tmp_path, data_dir):
  config = sweep.default()
  assert config.lengths() == [180, 280, 480, 800]
  assert len(config.cells()) == 9
  pre = sweep.cell_pretrain_config(config, "S", 7000)
  assert pre.train_split == "train[:7000]" and pre.model["width"] == 64 and pre.schedule["cooldown_steps"] == 80
  assert pre.model_name == "S" and pre.cooldown_at == [100, 200, 400] and pre.total_steps == 800
  assert pre.lr == 2e-3 and pre.head_bias_init == -10.0 and "flip_lr" in pre.pp_train  # the README table's recipe
  with pytest.raises(sweep.SweepError, match="unknown sweep config"):
    sweep.load("nope")
  (tmp_path / "typo.toml").write_text("data_size = [10]\n")
  with pytest.raises(sweep.SweepError, match="unknown sweep config field"):
    sweep.load(str(tmp_path / "typo.toml"))
  # A branch at 720 plus its 80-step cooldown is as long as the main run: refused before any work.
  with pytest.raises(sweep.SweepError, match="repeat"):
    sweep.run_sweep(dataclasses.replace(config, cooldown_at=[720]), str(tmp_path / "w"))
  with pytest.raises(sweep.SweepError, match="must end inside the run"):
    sweep.run_sweep(dataclasses.replace(config, cooldown_at=[400, 800]), str(tmp_path / "w"))
  # More upstream examples than the split holds: refused before any work, in one line.
  with pytest.raises(sweep.SweepError, match="data size 2000: digits train"):
    sweep.run_sweep(dataclasses.replace(sweep.quick(), data_sizes=[200, 2000]), str(tmp_path / "w"),
                    data_dir=data_dir)
  assert not (tmp_path / "w").exists()


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("sweep") / "quick"
  proc = run_cli("scaling", "sweep", "--quick", f"--workdir={workdir}", f"--data_dir={data_dir}", "--noprogress",
                 "--bootstrap_samples=50", env_extra=ONE_DEVICE)
  return {"proc": proc, "workdir": workdir}


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_quick_sweep_end_to_end(quick_sweep):
  proc, workdir = quick_sweep["proc"], quick_sweep["workdir"]
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  config = sweep.quick()
  records = results.load_all(workdir / "results")
  assert len(records) == len(config.cells()) * len(config.lengths())
  batch = config.pretrain["batch_size"]
  for r in records:
    training = r["checkpoint"]["training"]
    model = vit.from_config({**r["checkpoint"]["model"], "num_classes": 10})
    assert training["step"] in config.lengths() and training["examples_seen"] == training["step"] * batch
    assert training["upstream_examples"] in config.data_sizes
    assert training["model_name"] in config.models
    # Compute is the documented formula: 3 × forward FLOPs × examples seen, at the upstream resolution.
    assert training["train_flops"] == pytest.approx(flops.train_flops(model, (28, 28), training["examples_seen"]))
    assert 0.0 < r["headline"]["value"] <= 1.0
  analysis = json.loads((workdir / "scaling" / "scaling.json").read_text())["studies"]
  assert [s["task"] for s in analysis] == config.tasks
  by_name = {p["checkpoint"]: p for p in analysis[0]["points"]}
  frontier = [by_name[n] for n in analysis[0]["frontier"]]
  assert len(frontier) >= 1
  assert all(p["compute"] < q["compute"] and p["error"] > q["error"] for p, q in zip(frontier, frontier[1:]))
  # No frontier point is beaten by any point at less or equal compute.
  for f in frontier:
    assert not any(p["compute"] <= f["compute"] and p["error"] < f["error"] for p in by_name.values())
  page = (workdir / "scaling" / "leaderboard.html").read_text()
  assert "<h2>Scaling</h2>" in page and 'alt="scaling digits_heldout"' in page
  assert (workdir / "scaling" / "scaling_digits_heldout.png").stat().st_size > 10_000
  assert "The paper's claims at this scale" in proc.stdout


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_quick_sweep_resumes_and_refuses_another_config(quick_sweep, data_dir, tmp_path):
  workdir = quick_sweep["workdir"]
  assert quick_sweep["proc"].returncode == 0
  # Lose one result: the rerun redoes that cell only (its pre-training is already finished) and skips the rest.
  lost = sorted((workdir / "results").glob("XS_n200_s*/digits_heldout.json"))[0]
  lost.unlink()
  again = run_cli("scaling", "sweep", "--quick", f"--workdir={workdir}", f"--data_dir={data_dir}", "--noprogress",
                  "--bootstrap_samples=50", env_extra=ONE_DEVICE)
  assert again.returncode == 0, again.stderr[-3000:]
  status = {line.split()[0]: line.split()[1] for line in again.stdout.splitlines() if "_n" in line.split(" ")[0]}
  assert status == {"XXS_n200": "skipped", "XXS_n800": "skipped", "XS_n200": "done", "XS_n800": "skipped"}, status
  assert lost.exists()
  # The same workdir with another config is refused in one line, before any work.
  other = tmp_path / "other.toml"
  other.write_text((workdir / "sweep.toml").read_text().replace("total_steps = ", "total_steps = 1"))
  proc = run_cli("scaling", "sweep", f"--config={other}", f"--workdir={workdir}", f"--data_dir={data_dir}")
  assert proc.returncode == 1 and len(error_lines(proc)) == 1 and "another config" in proc.stderr
  # `scaling fit` alone re-analyses the results with the same numbers.
  fit = run_cli("scaling", "fit", f"--workdir={workdir}", "--bootstrap_samples=50", f"--out={tmp_path / 'fit'}")
  assert fit.returncode == 0, fit.stderr[-2000:]
  first = json.loads((workdir / "scaling" / "scaling.json").read_text())
  assert json.loads((tmp_path / "fit" / "scaling.json").read_text()) == first
