"""Bad input, one line each: a table of broken checkpoints, cards, task specs, configs, names and result files.

Every case runs the real `evalkit` command line (in this process, for speed: `cli.main` after absl parses the
flags) and must exit non-zero with exactly one `evalkit: error: …` line that names the bad thing, no traceback, and
no new file in the results directory. docs/robustness.md counts the cases.
"""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from evalkit import checkpoints, cli
from evalkit.models import vit

MU7 = ["--variant=mu/7", "--pool_type=map"]


def evalkit(*args) -> int:
  cli.FLAGS.unparse_flags()
  return cli.main(cli.FLAGS(["evalkit", *args]))


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
    fields = {**base, **changes}
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
      ("sweep: model name escapes", ["scaling", "sweep", f"--config={r / 'sweep_escape.toml'}",
                                     f"--workdir={r / 'sweep'}"], ["model name"]),
  ]


def _files(root):
  return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_every_bad_input_gives_one_line_and_writes_nothing(files, data_dir, capsys):
  r = files["root"]
  (r / "sweep_escape.toml").write_text('base = "digits_tiny"\ndata_sizes = [100]\ntasks = ["digits"]\n'
                                       'total_steps = 10\ncooldown_steps = 2\n'
                                       '[models."../../../../tmp/SWEEP_PWN"]\nvariant = "mu/7"\n')
  table = cases(r)
  assert len(table) >= 30
  failures = []
  for label, argv, words in table:
    before = _files(files["results"])
    try:
      code = evalkit(*argv, f"--data_dir={data_dir}") if argv[0] in ("eval", "pretrain", "scaling") else \
          evalkit(*argv)
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
    if _files(files["results"]) != before:
      problems.append("wrote into the results dir")
    if problems:
      failures.append(f"{label}: {', '.join(problems)}: {err.strip()[-400:]}")
  assert not list(r.parent.glob("**/SWEEP_PWN")), "a sweep model name escaped its workdir"
  assert not failures, "\n".join(failures)
