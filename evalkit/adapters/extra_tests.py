"""Extra test sets of a task: other splits or datasets in the same label space, scored with the same fitted model.

big_vision scores an ImageNet fine-tune on `imagenet2012_real` (ReaL: a *set* of plausible labels per image) and
`imagenet_v2` beside `validation`; a task spec lists such sets as `[[extra_tests]]` (tasks.ExtraTest). Single-label
sets are scored like the main test split. For a label set, a prediction is correct when it is in the set, and images
whose set is empty are skipped, as big_vision's evaluator does (docs/protocols.md, "Extra test sets").
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from evalkit import stats
from evalkit.data import source


@dataclasses.dataclass
class OpenedExtra:
  spec: object  # tasks.ExtraTest
  reader: source.SplitReader
  pp: str  # the task's pp, then the labels as `label` (multi-hot for label sets) and nothing else


def open_all(task, data_dir, num_classes: int) -> list[OpenedExtra]:
  """Readers for every extra test set of `task`; a missing dataset raises DatasetNotPrepared (one line)."""
  pid, pcount = jax.process_index(), jax.process_count()
  opened = []
  for extra in task.extra_tests:
    reader = source.open_split(extra.dataset, extra.split, data_dir, process_index=pid, process_count=pcount)
    labels = (f'onehot({num_classes}, key="{extra.label_key}", key_result="label", on=1, off=0)'
              if extra.label_key != "label" else None)
    pp = "|".join(p for p in (task.pp, labels, 'keep("image", "label")') if p)
    opened.append(OpenedExtra(extra, reader, pp))
  return opened


def correct_items(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(scored, correct): which items count, and per-item correctness of `predictions` (..., n) for those.

  `labels` is (n,) class ids, or (n, K) multi-hot label sets; items with an empty set are not scored.
  """
  predictions = np.asarray(predictions)
  if labels.ndim == 1:
    return np.ones(len(labels), bool), predictions == labels
  scored = labels.any(axis=1)
  hits = np.take_along_axis(labels[None].astype(bool), predictions.reshape(-1, len(labels))[..., None], axis=2)
  return scored, hits[..., 0].reshape(predictions.shape)[..., scored]


def describe(opened: OpenedExtra, labels: np.ndarray) -> dict:
  scored, _ = correct_items(np.zeros(len(labels), np.int64), labels)
  return {"dataset": source.dataset_fingerprint(opened.reader), "label_key": opened.spec.label_key,
          "n_scored": int(scored.sum()), "n_skipped": int((~scored).sum())}


def top1_metric(predictions: np.ndarray, labels: np.ndarray) -> dict:
  """Top-1 with a bootstrap CI over the scored items (one fitted model)."""
  _, correct = correct_items(predictions, labels)
  return stats.bootstrap_interval(correct)


def fewshot_metric(predictions_per_seed: np.ndarray, labels: np.ndarray) -> dict:
  """Mean over seeds with the few-shot interval (seed spread + item bootstrap) over the scored items."""
  _, correct = correct_items(predictions_per_seed, labels)
  interval = stats.accuracy_interval(correct)
  acc = correct.mean(axis=1)
  return {"value": interval["value"], "per_seed": [float(a) for a in acc], "std": float(acc.std()),
          "se": interval["se"], "ci95": interval["ci95"], "n": int(correct.shape[-1])}
