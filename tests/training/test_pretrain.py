"""Pre-training: loss falls, resume is bit-exact (also after kill -9), branches, devices, NaN handling, cards."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evalkit import checkpoints, distributed, faults
from evalkit.checkpoints import cards
from evalkit.train import flops
from evalkit.train import optim
from evalkit.train import pretrain
from evalkit.train import pretrain_configs
from evalkit.train import loop

from conftest import digits_tiny_config, subprocess_timeout


def flat(path):
  return checkpoints.read_flat(str(path))


def final_params(workdir, step):
  return flat(Path(workdir) / "checkpoints" / f"step_{step}")


def assert_same_params(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.fixture(scope="module")
def full_run(digits_tiny_run):
  """The reference: 60 uninterrupted steps, with a cooldown branch at step 30 (built once per session: conftest)."""
  return digits_tiny_run


def test_loss_falls_and_cards_are_written(full_run):
  run, exported = full_run
  assert set(exported) == {"cooldown_30", "final"}
  card = cards.load_card(str(exported["final"]) + ".toml")
  assert card.training["step"] == 60 and card.training["examples_seen"] == 60 * 64
  assert card.training["train_flops"] == pytest.approx(
      3 * flops.forward_flops(run.model, (28, 28)) * 60 * 64)
  assert card.available() and card.model().num_classes is None and card.model_config["pool_type"] == "map"
  params = flat(exported["final"])
  assert np.all(params["head/bias"] > -10.0) and np.any(params["head/bias"] != -10.0)  # head trained away from init

  # Loss on a fixed batch: the trained parameters beat the initial ones clearly.
  batch = next(run.reader.iter_id_batches([(run.stream.global_ids(0), (0, 0))], run.preprocess))
  labels = jax.nn.one_hot(batch["label"], run.num_classes)
  def loss(p):
    return float(loop.sigmoid_xent(run.model.apply({"params": p}, batch["image"])[0], labels))
  init = pretrain.init_params(run.model, run.image_size, 0, -10.0)
  trained = jax.tree.map(jnp.asarray, checkpoints.load_params(str(exported["final"]), model=run.model,
                                                              image_size=(28, 28)))
  assert loss(init) > 9.0  # bias −10: every label starts almost surely "off"
  assert loss(trained) < 0.5 * loss(init)


@pytest.mark.slow
def test_interrupted_run_resumes_bit_exact(full_run, data_dir, tmp_path):
  _, exported = full_run
  cfg = digits_tiny_config(cooldown_at=[30])
  first = pretrain.build_run(cfg, str(tmp_path), data_dir=data_dir, progress=False)
  pretrain.train(first, stop_at=20)  # "interrupted" right after the step-20 checkpoint
  assert not (tmp_path / "checkpoints" / "step_60").exists()
  again = pretrain.build_run(cfg, str(tmp_path), data_dir=data_dir, progress=False)
  pretrain.train(again)
  assert_same_params(final_params(tmp_path, 60), flat(exported["final"]))
  assert_same_params(flat(tmp_path / "checkpoints" / "cooldown_30"),
                     flat(exported["cooldown_30"]))


def test_branch_follows_main_run_then_cools_to_zero(full_run, data_dir, tmp_path):
  run, exported = full_run
  # The main run is not disturbed by branching: the same config without branches gives the same parameters.
  plain = pretrain.build_run(digits_tiny_config(), str(tmp_path), data_dir=data_dir, progress=False)
  pretrain.train(plain)
  assert_same_params(final_params(tmp_path, 60), flat(exported["final"]))
  # The branch starts from the main run's step-30 state and ends (step 40) at lr 0.
  card = cards.load_card(str(exported["cooldown_30"]) + ".toml")
  assert card.training["branch_of_step"] == 30 and card.training["step"] == 40
  main_lr = optim.make_schedule(run.config.schedule, 60)
  branch_lr = optim.branch_schedule(run.config.schedule, 60, 30, 10)
  assert all(branch_lr(t) == main_lr(t) for t in range(0, 31))
  assert branch_lr(40) == 0.0 and 0 < branch_lr(39) < main_lr(39)
  branch = flat(exported["cooldown_30"])
  main30 = final_params(run.workdir, 30)
  assert any(not np.array_equal(branch[k], main30[k]) for k in branch)



def test_head_bias_starts_at_minus_log_k_unless_set(data_dir, tmp_path):
  """Unset, the head bias starts at −log(K) for the dataset's K classes (every sigmoid at 1/K); the paper's −10 (JFT's
  −log(30k)) stays available by setting it, and an unset value survives the run's config.toml."""
  run = pretrain.build_run(digits_tiny_config(), str(tmp_path / "default"), data_dir=data_dir, progress=False)
  assert run.config.head_bias_init is None and run.num_classes == 10
  bias = flat(pretrain.export_initial(run, "init"))["head/bias"]
  np.testing.assert_allclose(bias, np.full(10, -np.log(10)), rtol=1e-6)
  np.testing.assert_allclose(1 / (1 + np.exp(-bias)), 1 / 11, rtol=1e-6)  # sigmoid(−log K) = 1/(K+1) ≈ 1/K
  paper = pretrain.build_run(digits_tiny_config(head_bias_init=-10.0), str(tmp_path / "paper"), data_dir=data_dir,
                             progress=False)
  paper_bias = flat(pretrain.export_initial(paper, "init"))["head/bias"]
  np.testing.assert_array_equal(paper_bias, np.full(10, -10.0, np.float32))
  (tmp_path / "c.toml").write_text('dataset = "digits"\nlr = 1e-3\n')
  assert pretrain_configs.load(str(tmp_path / "c.toml")).head_bias_init is None

@pytest.mark.slow
def test_first_losses_do_not_depend_on_device_count(data_dir, tmp_path):
  losses = {}
  for n in (1, 8):
    mesh = distributed.data_mesh(jax.devices()[:n])
    run = pretrain.build_run(digits_tiny_config(), str(tmp_path / f"d{n}"), data_dir=data_dir, mesh=mesh,
                             progress=False)
    params = pretrain.init_params(run.model, run.image_size, 0, -10.0)
    tx, _ = optim.make(run.config.to_dict(), params, 60)
    state = loop.init_state(params, tx)
    step_fn = loop.make_train_step(run.model, tx, mesh, loss=loop.sigmoid_xent, num_classes=run.num_classes)
    batches = run.reader.iter_id_batches(run.stream.local_batches(0, 5), run.preprocess)
    losses[n] = []
    for batch in batches:
      state, m = step_fn(state, jnp.asarray(batch["image"], jnp.float32), jnp.asarray(batch["label"]))
      losses[n].append(float(m["loss"]))
  # Relative 1e-5: the initial loss is ≈ 10 (head bias −10), float32 sums in other orders differ by ~3e-6 of it.
  np.testing.assert_allclose(losses[1], losses[8], rtol=1e-5, atol=0)
  assert losses[1][-1] < losses[1][0]


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  run = pretrain.build_run(digits_tiny_config(log_every=5), str(tmp_path), data_dir=data_dir, progress=False)
  clean = run.reader

  class Poisoned:
    """Images become NaN from step 25 on (as if the run diverged)."""
    def __getattr__(self, name):
      return getattr(clean, name)

    def iter_id_batches(self, id_batches, preprocess, **kw):
      id_batches = list(id_batches)
      for (_, (_, step)), batch in zip(id_batches, clean.iter_id_batches(id_batches, preprocess, **kw)):
        yield {**batch, "image": batch["image"] * np.nan} if step >= 25 else batch

  run.reader = Poisoned()
  with pytest.raises(pretrain.TrainingDiverged) as e:
    pretrain.train(run)
  message = str(e.value)
  assert "\n" not in message and "step 30" in message and "last good checkpoint: step 20" in message
  exported = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.toml"))
  assert exported == ["step_20.toml"]


@pytest.mark.timeout(600)
@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["before_rename:2", "state_saved:1", "train_step:35", "state_saved:4"])
def test_kill_9_then_rerun_ends_identical(full_run, data_dir, tmp_path, kill_at):
  """SIGKILL (evalkit.faults) mid-export of step 20 (orbax has committed its arrays, the metadata and card are not
  written: the second file renamed after config.toml), right after the step-20 state save, inside the cooldown
  branch (main steps 1-30, then branch steps 31-40), and after the final state save; the rerun ends with every card
  and the same weights."""
  _, exported = full_run
  cmd = [sys.executable, "-m", "evalkit.cli", "pretrain", "--config=digits_tiny", f"--workdir={tmp_path}",
         f"--data_dir={data_dir}", "--cooldown_at=30", "--noprogress"]
  killed = subprocess.run(cmd, capture_output=True, text=True, timeout=subprocess_timeout(),
                          env={**os.environ, faults.KILL_AT: kill_at})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=subprocess_timeout())
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  reference = Path(exported["final"]).parent
  assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.toml")) == \
      sorted(p.name for p in reference.glob("*.toml"))
  assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]  # no stale temporaries (orbax's or ours)
  for name in ("step_60", "cooldown_30"):
    assert_same_params(flat(tmp_path / "checkpoints" / name), flat(reference / name))
