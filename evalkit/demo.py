"""`evalkit demo`: from nothing to a few-shot table, offline, in a few minutes on 2 CPU cores.

1. prepares the embedded datasets (TFDS form, array_record);
2. pre-trains the toy ViT with the paper's recipe on Fashion-MNIST train[:50000] (upstream);
3. runs the few-shot suite (1/5/10/25 shots × 3 seeds) for three featurizers side by side — the pre-trained
   checkpoint, the same architecture at its random initialisation, and raw pixels (the reference row) — on
   (a) Fashion-MNIST in-domain: shots from train[50000:], unseen upstream, scored on test (like JFT → ImageNet), and
   (b) digits: far transfer;
4. fine-tunes both checkpoints on digits with the paper's protocol (SGD momentum, lr chosen on a held-out minival);
5. writes result JSON files, a Markdown summary and the HTML leaderboard, prints the in-domain gap pre-trained −
   random init, and fails (exit 1) if pre-training did not clearly help in-domain.
Without Fashion-MNIST it says how to get it and runs the same on digits alone (upstream train[:800], probe
train[800:]). Rerunning resumes the pre-training where it stopped.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from evalkit import checkpoints, distributed, evaluate, features, results, subjects, tasks
from evalkit.data import pp, source
from evalkit.report import leaderboard
from evalkit.train import pretrain
from evalkit.train import pretrain_configs
from evalkit.report import tables
from evalkit.data import embedded

MIN_IN_DOMAIN_GAIN = 0.05  # pre-trained must beat random init by ≥ 5 points, 10-shot in-domain


def _plan(data_dir) -> tuple[pretrain.PretrainConfig, str, list[str]]:
  """(pretrain config, in-domain task, all tasks) for the data this machine has."""
  if embedded.fashion_mnist_available(data_dir=data_dir):
    return pretrain_configs.demo(), "fashion_mnist_heldout", ["fashion_mnist_heldout", "digits"]
  print("Fashion-MNIST not found: `apt-get install dataset-fashion-mnist` (or set EVALKIT_FASHION_MNIST_DIR) for the "
        "full demo; running the digits-only variant.")
  return pretrain_configs.digits_demo(), "digits_heldout", ["digits_heldout"]


def upstream_top1(run: pretrain.Run, checkpoint, data_dir) -> tuple[float, int]:
  """Top-1 of the pre-trained model's own head on its upstream dataset's test split (the classes it was trained
  on), and the number of test images: how good the upstream model is, before any transfer."""
  params = checkpoints.load_params(str(checkpoint), model=run.model, image_size=run.image_size)
  logits = features.model_featurizer(run.model, params, weights_hash=str(checkpoint), representation="logits")
  reader = source.open_split(run.config.dataset, "test", data_dir)
  test_pp = pp.parse(f"decode|resize({run.image_size[0]})|value_range(-1, 1)")
  out = features.extract(logits, reader, test_pp, mesh=distributed.data_mesh(), progress=False)
  return float(np.mean(np.argmax(out.x, axis=1) == out.labels)), len(out.labels)


def main(results_dir: str = "results", data_dir: str | None = None, progress: bool = True) -> int:
  start = time.perf_counter()
  out = Path(results_dir).resolve() / "demo"
  config, in_domain, task_names = _plan(data_dir)
  run = pretrain.build_run(config, str(out / "pretrain"), data_dir=data_dir, progress=progress)
  init_ckpt = pretrain.export_initial(run, "random_init")
  t_pretrain = time.perf_counter()
  trained_ckpt = pretrain.train(run)["final"]
  t_pretrain = time.perf_counter() - t_pretrain
  top1, n_test = upstream_top1(run, trained_ckpt, data_dir)
  half = 1.96 * math.sqrt(top1 * (1 - top1) / n_test)
  upstream_line = (f"Upstream model: its own head scores {100 * top1:.1f}% (95% CI {100 * (top1 - half):.1f}–"
                   f"{100 * (top1 + half):.1f}) on {config.dataset} test ({n_test:,} images) after "
                   f"{config.total_steps} steps of {config.batch_size} ({t_pretrain:.0f} s).")
  print(upstream_line)

  subject_list = [
      subjects.resolve_subject(f"{trained_ckpt}.toml", name="pretrained"),
      subjects.resolve_subject(f"{init_ckpt}.toml", name="random_init"),
      subjects.resolve_subject(subjects.PIXELS),
  ]
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(out / "results"), cache_dir=None,
                                   overwrite=True, progress=progress)
  task_list = [tasks.load_task(t) for t in task_names]
  mesh = distributed.data_mesh()
  finetune_task = tasks.load_task("digits_finetune")
  failed = []
  runs = [(s, task_list) for s in subject_list] + [(s, [finetune_task]) for s in subject_list[:2]]
  for subject, subject_tasks in runs:
    for task, status, detail in evaluate.run(subject, subject_tasks, settings, mesh):
      print(f"{subject.name:12s} {task:22s} {status}: {detail}")
      if status == "error":
        failed.append(f"{subject.name} / {task}: {detail}")
  if failed:
    print(f"evalkit: error: {failed[0]}")
    return 1

  order = {s.name: i for i, s in enumerate(subject_list)}
  all_records = results.load_all(settings.results_dir)
  records = sorted((r for r in all_records if r["task"]["name"] in task_names),
                   key=lambda r: order[r["checkpoint"]["name"]])
  table = tables.fewshot_markdown(records)
  ft_records = [r for r in all_records if r["task"]["name"] == finetune_task.name]
  ft_table = tables.finetune_markdown(sorted(ft_records, key=lambda r: order[r["checkpoint"]["name"]]))
  headline = {r["checkpoint"]["name"]: r["headline"]["value"] for r in records if r["task"]["name"] == in_domain}
  gap = headline["pretrained"] - headline["random_init"]
  gap_line = (f"In-domain {in_domain} 10-shot: pre-trained {100 * headline['pretrained']:.1f}% vs random init "
              f"{100 * headline['random_init']:.1f}% ({100 * gap:+.1f} points); raw pixels "
              f"{100 * headline['pixels']:.1f}%.")
  summary = out / "summary.md"
  summary.write_text(
      "# evalkit demo\n\n"
      f"Upstream: {config.dataset} {config.train_split}, {config.total_steps} steps of {config.batch_size} "
      f"({t_pretrain:.0f} s).\n\n{upstream_line}\n\n## Few-shot ridge accuracy %, mean ± std over 3 seeds\n\n{table}\n{gap_line}\n\n"
      f"## Fine-tuning on digits (top-1 %, bootstrap 95% CI)\n\n{ft_table}")
  print("\n" + table)
  print(ft_table)
  print(gap_line)
  board = leaderboard.write(settings.results_dir, out / "report", records=all_records)
  print(f"results: {settings.results_dir}\nsummary: {summary}\nreport: {board['html']}\n"
        f"wall time: {time.perf_counter() - start:.0f} s")
  if gap < MIN_IN_DOMAIN_GAIN:
    print(f"evalkit: error: pre-training gained only {100 * gap:+.1f} points in-domain "
          f"(expected ≥ {100 * MIN_IN_DOMAIN_GAIN:.0f})")
    return 1
  return 0
