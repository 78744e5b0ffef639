"""Bad input, one line each: a table of broken checkpoints, cards, task specs, configs, names and result files.

Every case runs the real `evalkit` command line (in this process, for speed: `cli.main` after absl parses the
flags) and must exit non-zero with exactly one `evalkit: error: …` line that names the bad thing, no traceback, and
no new file in the results directory. docs/robustness.md counts the cases.
"""
import json
import math
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evalkit import checkpoints, cli
from evalkit.models import vit

from conftest import subprocess_timeout

MU7 = ["--variant=mu/7", "--pool_type=map"]


def evalkit(*args) -> int:
  """`evalkit *args` as `cli.run` runs it (flags parsed by `cli.parse_flags`), in this process."""
  cli.FLAGS.unparse_flags()
  return cli.main(cli.parse_flags(["evalkit", *args]))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """Broken inputs of every kind, each next to a working one."""
  root = tmp_path_factory.mktemp("bad")
  model = vit.ViT(num_classes=10, variant="mu/7", pool_type="map")
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))["params"]
  checkpoints.save_npz(root / "good.npz", params)
  data = (root / "good.npz").read_bytes()
  (root / "truncated.npz").write_bytes(data[: len(data) // 2])
  (root / "not_a_zip.npz").write_text("these are not weights\n")
  np.savez(root / "wrong_keys.npz", foo=np.zeros(3), bar=np.ones(2))
  wide = vit.ViT(num_classes=10, variant="mu/7", pool_type="map", width=48)
  checkpoints.save_npz(root / "wrong_shape.npz",
                       wide.init(jax.random.key(0), jnp.zeros((1, 28, 28, 3)))["params"])
  checkpoints.save_npz(root / "all_nan.npz", jax.tree.map(lambda a: jnp.full_like(a, math.nan), params))
  np.savez(root / "pickled.npz", obj=np.array([{"a": 1}], dtype=object))
  flat = dict(np.load(root / "good.npz"))
  first = sorted(flat)[0]
  np.savez(root / "one_inf.npz", **{**flat, first: np.full_like(flat[first], math.inf)})
  for stem, header in (("st_bad_types", {"w": {"dtype": 5, "shape": "x", "data_offsets": [0, 4]}}),
                       ("st_no_offsets", {"w": {"dtype": "F32", "shape": [1]}})):
    text = json.dumps(header).encode()
    (root / f"{stem}.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + bytes(4))
  checkpoints.save_orbax(root / "orbax_ok", params, {"model": {"variant": "mu/7", "pool_type": "map"}})
  shutil.copytree(root / "orbax_ok", root / "orbax_truncated")
  for f in sorted((root / "orbax_truncated").rglob("*")):
    if f.is_file() and f.name != "evalkit_meta.json" and f.stat().st_size > 1000:
      f.write_bytes(f.read_bytes()[:100])  # every array file cut short
  (root / "a_file").write_text("a file where a directory belongs\n")
  (root / "a_dir").mkdir()

  card = {"name": "c", "format": "npz", "path": str(root / "good.npz"), "resolution": 28,
          "model": '{ variant = "mu/7", pool_type = "map" }'}
  def write_card(file_stem, **changes):
    fields = {**card, **changes}
    lines = [f"{k} = {v}" if k == "model" else f"{k} = {json.dumps(v)}" for k, v in fields.items() if v is not None]
    (root / f"{file_stem}.toml").write_text("\n".join(lines) + "\n")
  write_card("card_bad_type", resolution="big")
  write_card("card_escape", name="..")
  write_card("card_missing", path=None)
  write_card("card_unknown", colour="red")
  write_card("card_bad_model", model='{ variant = "mu/7", width = "wide" }')
  (root / "card_syntax.toml").write_text("name = 'c\nformat = npz\n")

  base = {"dataset": "digits", "protocol": "fewshot_ridge", "train_split": "train", "test_split": "test",
          "pp": "decode|resize(28)|value_range(-1, 1)", "shots": [2], "seeds": [0], "headline_shots": 2}
  def write_task(file_stem, **changes):
    fields = {k: v for k, v in {**base, **changes}.items() if v is not None}
    if fields["protocol"] == "finetune":
      fields = {k: v for k, v in fields.items() if k not in ("shots", "seeds", "headline_shots")}
    (root / f"{file_stem}.toml").write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items()))
  write_task("shots_negative", shots=[-5])
  write_task("shots_zero", shots=[0])
  write_task("shots_too_many", shots=[1000], headline_shots=1000)
  write_task("shots_fraction", shots=[2.7])
  write_task("shots_text", shots="abc")
  write_task("seeds_empty", seeds=[])
  write_task("headline_missing", shots=[2, 5], headline_shots=10)
  write_task("split_empty", train_split="")
  write_task("split_garbage", test_split="te$t[[1:")
  write_task("split_unknown", test_split="validation")
  write_task("pp_unknown_op", pp="decode|frobnicate(3)|value_range(-1, 1)")
  write_task("pp_bad_args", pp="decode|resize('big')|value_range(-1, 1)")
  write_task("pp_arity", pp="decode|resize(1, 2, 3, 4)|value_range(-1, 1)")
  write_task("pp_syntax", pp="decode|resize(28|value_range(-1, 1)")
  write_task("protocol_unknown", protocol="linear_svm")
  write_task("dataset_missing", dataset="cifar10")
  write_task("name_escape", name="../../escaped")
  write_task("seeds_negative", seeds=[-1])
  write_task("pp_resize_negative", pp="decode|resize(-5)|value_range(-1, 1)")
  write_task("knn_ks_too_many", protocol="knn", shots=None, seeds=None, headline_shots=None, ks=[5000],
             headline_k=5000)
  (root / "l2_reg_inf.toml").write_text((root / "shots_zero.toml").read_text().replace("[0]", "[2]")
                                        + "l2_reg = inf\n")
  write_task("lp_c_negative", protocol="linear_probe", shots=None, seeds=None, headline_shots=None, c_grid=[-1.0])
  write_task("ft_batch_zero", protocol="finetune", pp_train="decode|value_range(-1, 1)", batch_size=0,
             total_steps=10, lr_grid=[0.1])
  write_task("ft_nan", protocol="finetune", pp_train="decode|resize(28)|value_range(-1, 1)", batch_size=32,
             total_steps=6, warmup_steps=1, lr_grid=[1e12])
  (root / "task_syntax.toml").write_text("dataset = digits\n[")

  results_dir = root / "results_ok"
  (root / "results_corrupt" / "x").mkdir(parents=True)
  (root / "results_corrupt" / "x" / "digits.json").write_text('{"schema": "evalkit.result/2", "metrics": ')
  (root / "results_foreign" / "x").mkdir(parents=True)
  (root / "results_foreign" / "x" / "digits.json").write_text('{"hello": "world"}')
  (root / "results_absurd" / "x").mkdir(parents=True)
  (root / "results_absurd" / "x" / "digits.json").write_text(json.dumps({
      "schema": "evalkit.result/2", "checkpoint": {"name": "x"}, "task": {"name": "digits", "spec_hash": "0"},
      "metrics": {"10shot": {"value": -5.0, "se": 1e300}}}))
  (root / "results_spec" / "x").mkdir(parents=True)
  (root / "results_spec" / "x" / "digits.json").write_text(json.dumps({
      "schema": "evalkit.result/2", "checkpoint": {"name": "x"}, "task": {"name": "digits", "spec_hash": "new"},
      "metrics": {"10shot": {"value": 0.5, "se": 0.01}}}))
  (root / "baseline_other_spec.json").write_text(json.dumps({"schema": "evalkit.baseline/1", "entries": [
      {"checkpoint": "x", "task": "digits", "metric": "10shot", "spec_hash": "old", "value": 0.5, "se": 0.01}]}))
  (root / "baseline_nested.json").write_text("[" * 100_000 + "]" * 100_000)
  (root / "baseline_absurd.json").write_text(json.dumps({"schema": "evalkit.baseline/1", "entries": [
      {"checkpoint": "x", "task": "digits", "metric": "10shot", "spec_hash": "0", "value": -5.0, "se": 1e300}]}))
  (root / "baseline_text.json").write_text("not json")
  entry = {"checkpoint": "x", "task": "digits", "metric": "10shot", "spec_hash": "0", "value": 0.5, "se": 0.01}
  for stem, change in (("baseline_huge_se", {"se": 1e300}), ("baseline_nan_value", {"value": math.nan}),
                       ("baseline_nan_se", {"se": math.nan})):
    (root / f"{stem}.json").write_text(json.dumps({"schema": "evalkit.baseline/1", "entries": [{**entry, **change}]}))
  for stem, record in (("results_no_metrics", {"schema": "evalkit.result/2", "checkpoint": {"name": "x"},
                                               "task": {"name": "digits", "spec_hash": "0"}}),
                       ("results_metrics_list", {"schema": "evalkit.result/2", "checkpoint": {"name": "x"},
                                                 "task": {"name": "digits", "spec_hash": "0"}, "metrics": [1, 2]}),
                       ("results_task_escape", {"schema": "evalkit.result/2", "checkpoint": {"name": "x"},
                                                "task": {"name": "../../../x", "spec_hash": "0"},
                                                "metrics": {"10shot": {"value": 0.5, "se": 0.01}}}),
                       ("results_name_type", {"schema": "evalkit.result/2", "checkpoint": {"name": 7},
                                              "task": {"name": "digits", "spec_hash": "0"},
                                              "metrics": {"10shot": {"value": 0.5, "se": 0.01}}}),
                       ("results_published_text", {"schema": "evalkit.result/3", "checkpoint": {"name": "x"},
                                                   "task": {"name": "digits", "spec_hash": "0"},
                                                   "metrics": {"10shot": {"value": 0.5, "se": 0.01}},
                                                   "published": {"10shot": "high"}})):
    (root / stem / "x").mkdir(parents=True)
    (root / stem / "x" / "digits.json").write_text(json.dumps(record))
  (root / "pretrain_batch_text.toml").write_text('base = "digits_tiny"\nbatch_size = "big"\n')
  (root / "pretrain_steps_below_warmup.toml").write_text(
      (root / "pretrain_batch_text.toml").read_text().replace('batch_size = "big"', "total_steps = 5"))
  return {"root": root, "results": results_dir}


def cases(r):
  """(label, argv, words the error line must contain)."""
  ev = ["eval", f"--results_dir={r / 'results_ok'}", f"--cache_dir={r / 'cache'}", "--noprogress", "--noloo"]
  good = [*ev, f"--checkpoint={r / 'good.npz'}", *MU7]
  task = lambda name: f"--tasks={r / name}.toml"
  return [
      ("truncated checkpoint", [*ev, f"--checkpoint={r / 'truncated.npz'}", *MU7], ["truncated.npz"]),
      ("non-zip checkpoint", [*ev, f"--checkpoint={r / 'not_a_zip.npz'}", *MU7], ["not_a_zip.npz"]),
      ("wrong-key checkpoint", [*ev, f"--checkpoint={r / 'wrong_keys.npz'}", *MU7], ["wrong_keys.npz"]),
      ("wrong-shape checkpoint", [*ev, f"--checkpoint={r / 'wrong_shape.npz'}", *MU7], ["shape"]),
      ("all-NaN checkpoint", [*ev, f"--checkpoint={r / 'all_nan.npz'}", *MU7], ["non-finite"]),
      ("pickled npz", [*ev, f"--checkpoint={r / 'pickled.npz'}", *MU7], ["pickled.npz"]),
      ("missing checkpoint", [*ev, f"--checkpoint={r / 'nope.npz'}", *MU7], ["nope.npz"]),
      ("no model settings", [*ev, f"--checkpoint={r / 'good.npz'}"], ["--variant"]),
      ("card: malformed TOML", [*ev, f"--checkpoint={r / 'card_syntax.toml'}"], ["card_syntax.toml", "TOML"]),
      ("card: wrong-typed field", [*ev, f"--checkpoint={r / 'card_bad_type.toml'}"], ["resolution"]),
      ("card: name escapes", [*ev, f"--checkpoint={r / 'card_escape.toml'}"], ["name", "'..'"]),
      ("card: missing field", [*ev, f"--checkpoint={r / 'card_missing.toml'}"], ["path"]),
      ("card: unknown field", [*ev, f"--checkpoint={r / 'card_unknown.toml'}"], ["colour"]),
      ("card: bad model field", [*ev, f"--checkpoint={r / 'card_bad_model.toml'}"], ["width"]),
      ("unknown card", [*ev, "--checkpoint=no_such_card"], ["no_such_card"]),
      ("--name escapes", [*good, "--name=..", "--tasks=digits"], ["--name", "'..'"]),
      ("--name with a separator", [*good, "--name=a/b", "--tasks=digits"], ["--name"]),
      ("unknown task", [*good, "--tasks=no_such_task"], ["no_such_task"]),
      ("task: malformed TOML", [*good, task("task_syntax")], ["task_syntax.toml"]),
      ("task: name escapes", [*good, task("name_escape")], ["name", "escaped"]),
      ("shots negative", [*good, task("shots_negative")], ["shots"]),
      ("shots zero", [*good, task("shots_zero")], ["shots"]),
      ("shots too many", [*good, task("shots_too_many")], ["1000", "class"]),
      ("shots fractional", [*good, task("shots_fraction")], ["shots", "2.7"]),
      ("shots not a list", [*good, task("shots_text")], ["shots"]),
      ("seeds empty", [*good, task("seeds_empty")], ["seeds"]),
      ("headline_shots not in shots", [*good, task("headline_missing")], ["headline_shots"]),
      ("split empty", [*good, task("split_empty")], ["split"]),
      ("split garbage", [*good, task("split_garbage")], ["te$t"]),
      ("split unknown", [*good, task("split_unknown")], ["validation"]),
      ("pp unknown op", [*good, task("pp_unknown_op")], ["frobnicate"]),
      ("pp bad argument", [*good, task("pp_bad_args")], ["resize"]),
      ("pp wrong arity", [*good, task("pp_arity")], ["resize"]),
      ("pp syntax", [*good, task("pp_syntax")], ["Syntax"]),
      ("unknown protocol", [*good, task("protocol_unknown")], ["linear_svm"]),
      ("missing dataset", [*good, task("dataset_missing")], ["cifar10", "prepare"]),
      ("fine-tune batch_size 0", [*good, task("ft_batch_zero")], ["batch_size"]),
      ("NaN loss", [*good, task("ft_nan")], ["diverged"]),
      ("bad --timm_kwargs", [*good, "--timm_model=vit_small_patch16_224", "--timm_kwargs=depth"], ["depth"]),
      ("report: corrupt result", ["report", f"--results_dir={r / 'results_corrupt'}", f"--out={r / 'o'}"],
       ["digits.json"]),
      ("report: foreign JSON", ["report", f"--results_dir={r / 'results_foreign'}", f"--out={r / 'o'}"],
       ["digits.json", "schema"]),
      ("report: absurd values", ["report", f"--results_dir={r / 'results_absurd'}", f"--out={r / 'o'}"],
       ["-5.0"]),
      ("compare: corrupt result", ["compare", "x", "x", f"--results_dir={r / 'results_corrupt'}"], ["digits.json"]),
      ("baseline: corrupt result", ["baseline", f"--results_dir={r / 'results_corrupt'}", f"--out={r / 'b.json'}"],
       ["digits.json"]),
      ("gate: nested JSON baseline", ["gate", f"--baseline={r / 'baseline_nested.json'}",
                                      f"--results_dir={r / 'results_ok'}"], ["baseline_nested.json"]),
      ("gate: absurd baseline", ["gate", f"--baseline={r / 'baseline_absurd.json'}",
                                 f"--results_dir={r / 'results_ok'}"], ["entry 0"]),
      ("gate: text baseline", ["gate", f"--baseline={r / 'baseline_text.json'}", f"--results_dir={r / 'results_ok'}"],
       ["baseline_text.json"]),
      ("gate: absurd result", ["gate", f"--baseline={r / 'baseline_absurd.json'}",
                               f"--results_dir={r / 'results_absurd'}"], ["entry 0"]),
      ("gate: baseline from another spec", ["gate", f"--baseline={r / 'baseline_other_spec.json'}",
                                            f"--results_dir={r / 'results_spec'}"], ["another task spec"]),
      ("pretrain: unknown config", ["pretrain", "--config=no_such_config", f"--workdir={r / 'w'}"],
       ["no_such_config"]),
      # Checkpoints, continued.
      ("one inf tensor", [*ev, f"--checkpoint={r / 'one_inf.npz'}", *MU7], ["non-finite"]),
      ("safetensors: wrong-typed header", [*ev, f"--checkpoint={r / 'st_bad_types.safetensors'}", *MU7],
       ["st_bad_types.safetensors"]),
      ("safetensors: no data_offsets", [*ev, f"--checkpoint={r / 'st_no_offsets.safetensors'}", *MU7],
       ["st_no_offsets.safetensors"]),
      ("truncated orbax directory", [*ev, f"--checkpoint={r / 'orbax_truncated'}"], ["orbax_truncated"]),
      # Model and eval flags.
      ("--variant unknown", [*ev, f"--checkpoint={r / 'good.npz'}", "--variant=XX/3", "--pool_type=map"],
       ["XX/3"]),
      ("--pool_type unknown", [*ev, f"--checkpoint={r / 'good.npz'}", "--variant=mu/7", "--pool_type=bogus"],
       ["bogus"]),
      ("--representation unknown", [*good, "--representation=block99"], ["block99"]),
      ("--rep_size negative", [*good, "--rep_size=-5"], ["rep_size"]),
      ("--tasks empty", [*good, "--tasks="], ["--tasks"]),
      ("--batch_size zero", [*good, "--batch_size=0"], ["--batch_size"]),
      # Task specs, continued.
      ("seeds negative", [*good, task("seeds_negative")], ["seeds", "-1"]),
      ("pp resize(-5)", [*good, task("pp_resize_negative")], ["resize", "-5"]),
      ("kNN ks beyond the train size", [*good, task("knn_ks_too_many")], ["5000"]),
      ("l2_reg inf", [*good, task("l2_reg_inf")], ["l2_reg"]),
      ("linear probe C negative", [*good, task("lp_c_negative")], ["c_grid"]),
      # A file where a directory belongs, or the reverse.
      ("--results_dir is a file", [*good, f"--results_dir={r / 'a_file'}"], ["a_file"]),
      ("--cache_dir is a file", [*good, f"--cache_dir={r / 'a_file'}"], ["a_file"]),
      ("--data_dir is a file", [*good, f"--data_dir={r / 'a_file'}"], ["a_file"]),
      ("pretrain --workdir is a file", ["pretrain", "--config=digits_tiny", f"--workdir={r / 'a_file'}"],
       ["a_file"]),
      ("report --out is a file", ["report", f"--results_dir={r / 'results_ok'}", f"--out={r / 'a_file'}"],
       ["a_file"]),
      ("baseline --out is a directory", ["baseline", f"--results_dir={r / 'results_ok'}", f"--out={r / 'a_dir'}"],
       ["a_dir"]),
      ("gate --summary is a directory", ["gate", f"--baseline={r / 'baseline_other_spec.json'}",
                                         f"--results_dir={r / 'results_spec'}", f"--summary={r / 'a_dir'}"],
       ["a_dir"]),
      ("--checkpoint is a plain directory", [*ev, f"--checkpoint={r / 'a_dir'}", *MU7], ["a_dir"]),
      # Pre-training configs.
      ("pretrain --total_steps negative", ["pretrain", "--config=digits_tiny", "--total_steps=-5",
                                           f"--workdir={r / 'w'}"], ["total_steps", "-5"]),
      ("pretrain: batch_size text", ["pretrain", f"--config={r / 'pretrain_batch_text.toml'}", f"--workdir={r / 'w'}"],
       ["batch_size"]),
      ("pretrain: total_steps below warmup", ["pretrain", f"--config={r / 'pretrain_steps_below_warmup.toml'}",
                                              f"--workdir={r / 'w'}"], ["total_steps", "warmup"]),
      # Gate numbers.
      ("gate --z nan", ["gate", f"--baseline={r / 'baseline_other_spec.json'}", f"--results_dir={r / 'results_spec'}",
                        "--z=nan"], ["--z"]),
      ("gate --z negative", ["gate", f"--baseline={r / 'baseline_other_spec.json'}",
                             f"--results_dir={r / 'results_spec'}", "--z=-100"], ["--z"]),
      ("gate --tolerance negative", ["gate", f"--baseline={r / 'baseline_other_spec.json'}",
                                     f"--results_dir={r / 'results_spec'}", "--tolerance=-1"], ["--tolerance"]),
      ("gate: baseline se 1e300", ["gate", f"--baseline={r / 'baseline_huge_se.json'}",
                                   f"--results_dir={r / 'results_ok'}"], ["se"]),
      ("gate: baseline value NaN", ["gate", f"--baseline={r / 'baseline_nan_value.json'}",
                                    f"--results_dir={r / 'results_ok'}"], ["value"]),
      ("gate: baseline se NaN", ["gate", f"--baseline={r / 'baseline_nan_se.json'}",
                                 f"--results_dir={r / 'results_ok'}"], ["se"]),
      # Result records with missing keys or wrong types.
      ("report: result without metrics", ["report", f"--results_dir={r / 'results_no_metrics'}", f"--out={r / 'o'}"],
       ["digits.json", "metrics"]),
      ("report: metrics not a table", ["report", f"--results_dir={r / 'results_metrics_list'}", f"--out={r / 'o'}"],
       ["digits.json", "metrics"]),
      ("compare: checkpoint name not text", ["compare", "x", "x", f"--results_dir={r / 'results_name_type'}"],
       ["digits.json"]),
      ("report: published number not a number",
       ["report", f"--results_dir={r / 'results_published_text'}", f"--out={r / 'o'}"], ["digits.json", "published"]),
      ("report: task name escapes", ["report", f"--results_dir={r / 'results_task_escape'}", f"--out={r / 'o'}"],
       ["digits.json", "../../../x"]),
      ("scaling fit: task name escapes", ["scaling", "fit", f"--results_dir={r / 'results_task_escape'}",
                                          f"--out={r / 'o'}"], ["digits.json", "../../../x"]),
      ("checkpoint path ending in /..", [*ev, f"--checkpoint={r / 'a_dir'}/..", *MU7], [".."]),
      ("scaling fit: corrupt result", ["scaling", "fit", f"--results_dir={r / 'results_corrupt'}",
                                       f"--out={r / 'o'}"], ["digits.json"]),
      ("scaling fit: negative bootstrap", ["scaling", "fit", f"--results_dir={r / 'results_ok'}", f"--out={r / 'o'}",
                                           "--bootstrap_samples=-3"], ["bootstrap_samples"]),
      ("sweep: model name escapes", ["scaling", "sweep", f"--config={r / 'sweep_escape.toml'}",
                                     f"--workdir={r / 'sweep'}"], ["model name"]),
  ]


def _files(root):
  return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# Cases that train (≈ 20 s on 2 cores): the slow tier runs them.
SLOW_CASES = ("NaN loss",)


def _failures(table, files, data_dir, capsys, monkeypatch) -> list[str]:
  """Runs each case; returns what went wrong, one line per failing case."""
  r = files["root"]
  # An isolated working directory and home: a default path (`results`, `~/.cache/...`) written by mistake shows up
  # under `r` too, where the test looks.
  (r / "cwd").mkdir(exist_ok=True)
  monkeypatch.chdir(r / "cwd")
  monkeypatch.setenv("HOME", str(r / "home"))
  failures = []
  for label, argv, words in table:
    before = _files(r)
    try:
      own_data_dir = argv[0] in ("eval", "pretrain", "scaling") and not any(a.startswith("--data_dir=") for a in argv)
      code = evalkit(*argv, f"--data_dir={data_dir}") if own_data_dir else evalkit(*argv)
    except SystemExit as e:  # absl refusing a flag value exits; it must still be one line
      code = e.code
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"{label}: raised {type(e).__name__}: {' '.join(str(e).split())[:300]}")
      capsys.readouterr()
      continue
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("evalkit: error: ")]
    problems = []
    if code == 0:
      problems.append("exit 0")
    if len(lines) != 1:
      problems.append(f"{len(lines)} error lines")
    elif not all(w in lines[0] for w in words):
      problems.append(f"does not name {words}")
    if "Traceback" in err:
      problems.append("traceback")
    if _files(r) != before:
      problems.append(f"wrote {sorted(set(_files(r)) - set(before))[:3]}")
    if problems:
      failures.append(f"{label}: {', '.join(problems)}: {err.strip()[-400:]}")
  return failures


def test_every_bad_input_gives_one_line_and_writes_nothing(files, data_dir, capsys, monkeypatch):
  r = files["root"]
  (r / "sweep_escape.toml").write_text('base = "digits_tiny"\ndata_sizes = [100]\ntasks = ["digits"]\n'
                                       'total_steps = 10\ncooldown_steps = 2\n'
                                       '[models."../../../../tmp/SWEEP_PWN"]\nvariant = "mu/7"\n')
  table = [case for case in cases(r) if case[0] not in SLOW_CASES]
  assert len(table) >= 60
  failures = _failures(table, files, data_dir, capsys, monkeypatch)
  assert not list(r.parent.glob("**/SWEEP_PWN")), "a sweep model name escaped its workdir"
  assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_bad_inputs_that_train_give_one_line_and_write_nothing(files, data_dir, capsys, monkeypatch):
  table = [case for case in cases(files["root"]) if case[0] in SLOW_CASES]
  assert len(table) == len(SLOW_CASES)
  failures = _failures(table, files, data_dir, capsys, monkeypatch)
  assert not failures, "\n".join(failures)


@pytest.mark.parametrize("argv,words", [
    (["eval", "--batch_size=abc"], ["--batch_size", "abc"]),
    (["eval", "--no_such_flag=1"], ["no_such_flag"]),
    (["gate", "--baseline=b.json", "--z=nan"], ["--z", "nan"]),
    (["eval", "--tasks="], ["--tasks"]),
])
def test_a_bad_flag_is_one_line_from_the_real_command(argv, words, tmp_path):
  """Flag parsing happens in absl's `app.run`, before `main`: the installed command says one line too, exit 2."""
  proc = subprocess.run([sys.executable, "-m", "evalkit.cli", *argv], capture_output=True, text=True, cwd=tmp_path,
                        timeout=subprocess_timeout())
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr
  assert lines[0].startswith("evalkit: error: ") and all(w in lines[0] for w in words), lines[0]
  assert not list(tmp_path.iterdir())
