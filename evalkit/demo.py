"""`evalkit demo`: does pre-training help? From nothing to the answer, offline, in ≤ 5 minutes on 2 CPU cores.

1. prepares the embedded datasets (TFDS form, array_record);
2. pre-trains the toy ViT with the paper's recipe on Fashion-MNIST train[:50000] (upstream) and scores its own head
   on Fashion-MNIST test;
3. runs the few-shot suite (1/5/10/25 shots × 3 seeds) for three featurizers side by side — the pre-trained
   checkpoint, the same architecture at its random initialisation, and raw pixels (the reference row) — on
   (a) Fashion-MNIST in-domain: shots from train[50000:], unseen upstream, scored on test (like JFT → ImageNet), and
   (b) digits: far transfer;
4. fine-tunes both checkpoints with the paper's protocol (SGD momentum, cosine schedule, minival) in-domain
   (`fashion_mnist_heldout_finetune`) and far (`digits_heldout_finetune`);
5. writes result JSON files, a Markdown summary and the HTML report, both opening with one table (a row per
   checkpoint: upstream top-1, 10-shot and fine-tune in-domain / far, each with its 95% CI) and one line saying what
   to conclude, and fails (exit 1) unless pre-training beat random init and raw pixels at 10-shot, and random init
   when fine-tuned, in-domain (95% CI of the paired difference above 0: `analysis.pretraining_gain`).
Without Fashion-MNIST it says how to get it and runs the same on digits alone (upstream train[:800], probes and
fine-tune on train[800:]; no far transfer). Rerunning resumes the pre-training where it stopped.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from evalkit import checkpoints, distributed, evaluate, features, fileio, results, stats, subjects, tasks
from evalkit.analysis import pretraining_gain
from evalkit.analysis.pretraining_gain import Column
from evalkit.data import embedded, pp, source
from evalkit.report import leaderboard, tables
from evalkit.train import pretrain, pretrain_configs

PRETRAINED, RANDOM_INIT = "pretrained", "random_init"
FEWSHOT_BASELINES = (RANDOM_INIT, subjects.PIXELS)  # raw pixels are a few-shot featurizer, not a model to fine-tune
FINETUNE_BASELINES = (RANDOM_INIT,)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the demo runs on the data this machine has: the upstream config and the summary's columns (in-domain
  first); the few-shot tasks run for every featurizer, the fine-tunes for the two checkpoints."""
  config: pretrain.PretrainConfig
  columns: tuple[Column, ...]
  far_dataset: str | None = None

  def tasks_of(self, protocol: str) -> list[tasks.Task]:
    return [t for t in (tasks.load_task(c.task) for c in self.columns) if t.protocol == protocol]


def _plan(data_dir) -> Plan:
  if embedded.fashion_mnist_available(data_dir=data_dir):
    return Plan(pretrain_configs.demo(), (
        Column("10-shot in-domain", "fashion_mnist_heldout", True, FEWSHOT_BASELINES),
        Column("fine-tune in-domain", "fashion_mnist_heldout_finetune", True, FINETUNE_BASELINES),
        Column("10-shot far", "digits", False, FEWSHOT_BASELINES),
        Column("fine-tune far", "digits_heldout_finetune", False, FINETUNE_BASELINES)), far_dataset="digits")
  print("Fashion-MNIST not found: `apt-get install dataset-fashion-mnist` (or set EVALKIT_FASHION_MNIST_DIR) for the "
        "full demo; running the digits-only variant.")
  return Plan(pretrain_configs.digits_demo(), (
      Column("10-shot in-domain", "digits_heldout", True, FEWSHOT_BASELINES),
      Column("fine-tune in-domain", "digits_heldout_finetune", True, FINETUNE_BASELINES)))


def upstream_top1(run: pretrain.Run, checkpoint, data_dir) -> dict:
  """Top-1 of a checkpoint's own head on its upstream dataset's test split (the classes it was trained on), with its
  bootstrap 95% CI over test images as every top-1 of evalkit has: how good the upstream model is, before transfer."""
  params = checkpoints.load_params(str(checkpoint), model=run.model, image_size=run.image_size)
  logits = features.model_featurizer(run.model, params, weights_hash=str(checkpoint), representation="logits")
  reader = source.open_split(run.config.dataset, "test", data_dir)
  test_pp = pp.parse(f"decode|resize({run.image_size[0]})|value_range(-1, 1)")
  out = features.extract(logits, reader, test_pp, mesh=distributed.data_mesh(), progress=False)
  return stats.bootstrap_interval(np.argmax(out.x, axis=1) == out.labels)


def main(results_dir: str = "results", data_dir: str | None = None, progress: bool = True) -> int:
  start = time.perf_counter()
  out = Path(results_dir).resolve() / "demo"
  plan = _plan(data_dir)
  config = plan.config
  run = pretrain.build_run(config, str(out / "pretrain"), data_dir=data_dir, progress=progress)
  init_ckpt = pretrain.export_initial(run, RANDOM_INIT)
  t_pretrain = time.perf_counter()
  trained_ckpt = pretrain.train(run)["final"]
  t_pretrain = time.perf_counter() - t_pretrain
  upstream = {name: upstream_top1(run, ckpt, data_dir) for name, ckpt in ((PRETRAINED, trained_ckpt),
                                                                            (RANDOM_INIT, init_ckpt))}
  mine, (lo, hi) = upstream[PRETRAINED], upstream[PRETRAINED]["ci95"]
  upstream_line = (f"Upstream model: its own head scores {100 * mine['value']:.1f}% (95% CI {100 * lo:.1f}–"
                   f"{100 * hi:.1f}) on {config.dataset} test ({mine['n']:,} images) after {config.total_steps} "
                   f"steps of {config.batch_size} ({t_pretrain:.0f} s); {100 * upstream[RANDOM_INIT]['value']:.1f}% "
                   "at random init.")
  print(upstream_line)

  featurizers = [subjects.resolve_subject(f"{trained_ckpt}.toml", name=PRETRAINED),
                 subjects.resolve_subject(f"{init_ckpt}.toml", name=RANDOM_INIT),
                 subjects.resolve_subject(subjects.PIXELS)]
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(out / "results"), cache_dir=None,
                                   overwrite=True, progress=progress)
  fewshot, finetune = plan.tasks_of("fewshot_ridge"), plan.tasks_of("finetune")
  mesh = distributed.data_mesh()
  failed = []
  runs = [(s, fewshot) for s in featurizers] + [(s, finetune) for s in featurizers[:2]]
  for subject, subject_tasks in runs:
    for task, status, detail in evaluate.run(subject, subject_tasks, settings, mesh):
      print(f"{subject.name:12s} {task:31s} {status}: {detail}")
      if status == "error":
        failed.append(f"{subject.name} / {task}: {detail}")
  if failed:
    print(f"evalkit: error: {failed[0]}", file=sys.stderr)
    return 1

  names = [s.name for s in featurizers]
  found = pretraining_gain.gains(settings.results_dir, PRETRAINED, plan.columns)
  all_records = results.load_all(settings.results_dir)
  summary_table = tables.pretraining_summary(all_records, names, plan.columns, found, upstream=upstream,
                                             far_dataset=plan.far_dataset)

  def of(protocol):  # this protocol's records, in the summary's row order
    return sorted((r for r in all_records if r["protocol"] == protocol),
                  key=lambda r: names.index(r["checkpoint"]["name"]))
  fewshot_table, finetune_table = tables.fewshot_markdown(of("fewshot_ridge")), tables.finetune_markdown(of("finetune"))
  summary = out / "summary.md"
  text = (f"# evalkit demo\n\n{upstream_line}\n\n{summary_table.markdown()}\n"
          f"## Few-shot ridge accuracy %, mean ± std over 3 seeds\n\n{fewshot_table}\n"
          f"## Fine-tuning (top-1 %, bootstrap 95% CI)\n\n{finetune_table}")
  fileio.atomic_write(summary, lambda f: f.write(text.encode()))
  print("\n" + fewshot_table)
  print(finetune_table)
  print(summary_table.markdown())
  board = leaderboard.write(settings.results_dir, out / "report", records=all_records, lead=summary_table)
  print(f"results: {settings.results_dir}\nsummary: {summary}\nreport: {board['html']}\n"
        f"wall time: {time.perf_counter() - start:.0f} s")
  unmet = pretraining_gain.in_domain_shortfalls(found)
  if unmet:
    print(f"evalkit: error: pre-training did not clearly help in-domain: {unmet[0].text()}", file=sys.stderr)
    return 1
  return 0
