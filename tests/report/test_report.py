"""Leaderboard report (Markdown, CSV, self-contained HTML checked in headless Chromium) and paired comparisons."""
import csv
import dataclasses
import io
import json
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from evalkit import distributed, evaluate, results, subjects, tasks
from evalkit.checkpoints import cards
from evalkit.analysis import compare, pretraining_gain
from evalkit.analysis.pretraining_gain import Column
from evalkit.report import leaderboard, plotting, tables

from conftest import subprocess_timeout


@pytest.fixture(scope="module")
def results_dir(data_dir, random_vit, tmp_path_factory):
  """Real results on digits for raw pixels and two random-init ViTs, plus one computed under another spec."""
  out = tmp_path_factory.mktemp("report")
  subject_list = [subjects.resolve_subject(subjects.PIXELS)]
  for seed in (0, 1):
    subject_list.append(subjects.resolve_subject(str(random_vit(seed, "map")), name=f"vit_seed{seed}",
                                                 model_options={"variant": "mu/7", "pool_type": "map"}))
  settings = evaluate.EvalSettings(data_dir=data_dir, results_dir=str(out / "results"), progress=False)
  task_list = [tasks.load_task("digits"), tasks.load_task("digits_heldout")]
  for subject in subject_list:
    assert {row[1] for row in evaluate.run(subject, task_list, settings, distributed.data_mesh())} == {"done"}
  # A fourth row whose digits result was computed under another spec (e.g. other shots): must not be ranked.
  odd = out / "results" / "other_spec"
  shutil.copytree(out / "results" / "vit_seed1", odd)
  record = results.load(odd / "digits_heldout.json")
  record["checkpoint"]["name"] = "other_spec"
  (odd / "digits_heldout.json").write_text(json.dumps(record))
  record = results.load(odd / "digits.json")
  record["checkpoint"]["name"], record["task"]["spec_hash"] = "other_spec", "0000000000000000"
  (odd / "digits.json").write_text(json.dumps(record))
  return out / "results"


def test_markdown_and_csv(results_dir, tmp_path):
  paths = leaderboard.write(results_dir, tmp_path)
  md = paths["markdown"].read_text()
  assert md.splitlines()[0] == "| checkpoint | digits 10shot | digits_heldout 10shot | suite mean |"
  assert "| pixels | 83.60 [" in md and "≠spec" in md
  board = leaderboard.build(results.load_all(results_dir))
  digits, heldout = board.cells[("pixels", ("digits", "10shot"))], board.cells[("pixels", ("digits_heldout", "10shot"))]
  mean = board.suite_mean["pixels"]
  assert mean.value == pytest.approx((digits.value + heldout.value) / 2)
  stored_se = {r["task"]["name"]: r["metrics"]["10shot"]["se"] for r in results.load_all(results_dir)
               if r["checkpoint"]["name"] == "pixels"}
  assert digits.se == stored_se["digits"] and heldout.se == stored_se["digits_heldout"]
  assert mean.se == pytest.approx((digits.se**2 + heldout.se**2) ** 0.5 / 2)
  assert mean.ci95 == pytest.approx((mean.value - 1.96 * mean.se, mean.value + 1.96 * mean.se))
  assert "other_spec" not in board.suite_mean  # its digits cell is not comparable
  rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
  by_name = {r["checkpoint"]: r for r in rows if r["task"] == "digits"}
  assert set(by_name) == {"pixels", "vit_seed0", "vit_seed1", "other_spec"}
  assert by_name["pixels"]["rank"] == "1" and by_name["other_spec"]["rank"] == ""
  assert by_name["other_spec"]["spec_mismatch"] == "True"
  lo, hi = float(by_name["pixels"]["ci95_low"]), float(by_name["pixels"]["ci95_high"])
  assert lo < float(by_name["pixels"]["value"]) < hi


def chromium(url: str):
  exe = shutil.which("chromium") or shutil.which("chromium-browser")
  if exe is None:
    pytest.skip("headless Chromium not installed (apt-get install chromium)")
  with tempfile.TemporaryDirectory() as profile:
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", url], capture_output=True, text=True,
        timeout=min(120, subprocess_timeout()))
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE:" in line]


def row_order(dom: str) -> list[str]:
  body = dom.split("<tbody>")[1].split("</tbody>")[0]
  return [cell.split("</td>")[0] for cell in body.split("<tr><td>")[1:]]


def column_values(dom: str) -> list[float]:
  body = dom.split("<tbody>")[1].split("</tbody>")[0]
  return [float(row.split('data-v="')[1].split('"')[0]) for row in body.split("<tr>")[1:]]


def test_html_in_headless_chromium(results_dir, tmp_path):
  page = leaderboard.write(results_dir, tmp_path)["html"]
  text = page.read_text()
  assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
  dom, console = chromium(page.as_uri())
  assert console == [], console
  assert set(row_order(dom)) == {"pixels", "vit_seed0", "vit_seed1", "other_spec"}
  assert 'class="mismatch' in dom and "data:image/png;base64," in dom
  for name in ("asc", "desc"):
    dom, console = chromium(page.as_uri() + f"#sort=1:{name}")
    assert console == [] and f'data-sorted="1:{name}"' in dom
    values = column_values(dom)
    assert values == sorted(values, reverse=name == "desc") and len(set(values)) >= 3
  assert row_order(dom)[0] == "pixels"  # the last one, sorted descending
  # The check has teeth: a page with a script error is reported.
  bad = tmp_path / "bad.html"
  bad.write_text("<html><body><script>undefinedFunction();</script></body></html>")
  assert chromium(bad.as_uri())[1]


def test_compare_is_paired_and_symmetric(results_dir):
  rows, overall = compare.compare(results_dir, "pixels", "vit_seed0")
  assert [r.task for r in rows] == ["digits", "digits_heldout"]
  row = rows[0]
  assert row.metric == "10shot"
  assert row.delta == pytest.approx(row.acc_a - row.acc_b) and row.delta > 0.2  # pixels ≫ a random-init ViT
  assert row.p_bootstrap < 0.01 and row.p_mcnemar < 0.01 and row.ci95[0] > 0
  back, _ = compare.compare(results_dir, "vit_seed0", "pixels")
  assert back[0].delta == pytest.approx(-row.delta) and (back[0].a_only, back[0].b_only) == (row.b_only, row.a_only)
  same, _ = compare.compare(results_dir, "vit_seed0", "vit_seed0")
  assert same[0].delta == 0 and same[0].p_mcnemar == 1.0 and same[0].p_bootstrap == 1.0
  assert overall["delta"] == pytest.approx((rows[0].delta + rows[1].delta) / 2) and overall["p"] < 0.01
  with pytest.raises(compare.CompareError, match="task specs"):
    compare.compare(results_dir, "pixels", "other_spec")


def test_mcnemar_reference_values():
  assert compare.mcnemar_p(0, 0) == 1.0
  # χ² = (|30 − 10| − 1)² / 40 = 9.025 → p ≈ 0.00266 (χ²(1) survival function)
  assert compare.mcnemar_p(30, 10) == pytest.approx(0.002663, rel=1e-3)
  assert compare.mcnemar_p(10, 30) == compare.mcnemar_p(30, 10)
  assert np.isclose(compare.mcnemar_p(20, 21), 1.0)


def test_published_number_only_beside_a_result_of_the_same_protocol(results_dir):
  """A card's "<task>/<metric>" goes into a record (and so beside the result) only when the evaluated spec is that
  task's; records written before results carried it get it from the card when reported."""
  card, spec_hash = cards.load_card("vit_g14"), tasks.load_task("imagenet2012").spec_hash
  published = evaluate.published_numbers(card, "imagenet2012", spec_hash)
  assert published["10shot"] == pytest.approx(0.8486) and "top1_polyak" not in published  # another task's number
  assert evaluate.published_numbers(card, "imagenet2012", "0123456789abcdef") == {}  # e.g. 5 seeds, another size
  assert evaluate.published_numbers(None, "imagenet2012", spec_hash) == {}
  record = results.load(results_dir / "vit_seed0" / "digits.json")
  assert record["published"] == {}  # no card
  record["checkpoint"]["card"] = "vit_g14"
  record["task"]["name"], record["task"]["spec_hash"] = "imagenet2012", spec_hash
  record["headline"]["metric"] = "10shot"
  (cell,) = leaderboard.build([{**record, "published": published}]).cells.values()
  assert cell.published == 84.86
  del record["published"]  # as in an evalkit.result/2 file
  (older,) = evaluate.with_published([record])
  assert older["published"] == published
  record["task"]["spec_hash"] = "0123456789abcdef"
  (cell,) = leaderboard.build(evaluate.with_published([record])).cells.values()
  assert cell.published is None


def _headline_accuracy(results_dir, name, task) -> float:
  """The 10-shot accuracy straight from the stored per-item predictions (mean over the 10-shot episodes)."""
  items = results.load_items(results.result_path(results_dir, name, task))
  keep = results.episodes_of(items, "10shot")
  return float(np.mean(items["predictions"][keep] == items["test_labels"][None]))


def test_pretraining_gain_verdicts_table_and_conclusion(results_dir, tmp_path):
  """Pixels play "pre-trained" against two random-init ViTs: Δ per column equals the difference of accuracies read
  from the stored predictions, every verdict is "better", and the table opens the Markdown and HTML reports."""
  vits = ("vit_seed0", "vit_seed1")
  columns = [Column("10-shot in-domain", "digits_heldout", True, vits), Column("10-shot far", "digits", False, vits)]
  found = pretraining_gain.gains(results_dir, "pixels", columns)
  assert [(g.column.task, g.baseline) for g in found] == [(task, baseline) for task in ("digits_heldout", "digits")
                                                          for baseline in ("vit_seed0", "vit_seed1")]
  for g in found:
    expected = (_headline_accuracy(results_dir, "pixels", g.column.task)
                - _headline_accuracy(results_dir, g.baseline, g.column.task))
    assert g.comparison.delta == pytest.approx(expected, abs=1e-9) and expected > 0.2
    lo, hi = g.comparison.ci95
    assert 0 < lo < expected < hi and g.verdict == "better"
  line = pretraining_gain.conclusion(found, "digits")
  assert line.startswith("Pre-training helps in-domain: 10-shot in-domain +") and "it transfers there too" in line

  # The other way round, every comparison is "worse"; against itself, Δ = 0 is no clear difference.
  back = pretraining_gain.gains(results_dir, "vit_seed0",
                                [dataclasses.replace(c, baselines=("pixels",)) for c in columns])
  assert {g.verdict for g in back} == {"worse"}
  line = pretraining_gain.conclusion(back, "digits")
  assert line.startswith("Pre-training did NOT clearly help in-domain") and "does not transfer there" in line
  itself = dataclasses.replace(columns[0], baselines=("vit_seed0",))
  (same,) = pretraining_gain.gains(results_dir, "vit_seed0", [itself])
  with pytest.raises(results.BadResult, match="no_results"):  # a missing result is an error, not a left-out claim
    pretraining_gain.gains(results_dir, "no_results", columns)
  assert same.comparison.delta == 0 and same.verdict == "no clear difference"
  assert pretraining_gain.in_domain_shortfalls(found) == [] and pretraining_gain.in_domain_shortfalls(back) == back[:1]

  upstream = {"value": 0.5, "ci95": [0.45, 0.55]}
  table = tables.pretraining_summary(results.load_all(results_dir), ["pixels", "vit_seed0", "no_results"], columns,
                                     found, upstream={"pixels": upstream}, far_dataset="digits")
  record = results.load(results_dir / "pixels" / "digits.json")["metrics"]["10shot"]
  assert table.rows[0][:2] == ["pixels", "50.0 (45.0–55.0)"] and table.rows[2] == ["no_results", "–", "–", "–"]
  assert table.rows[0][3] == (f"{100 * record['value']:.1f} ({100 * record['ci95'][0]:.1f}–"
                              f"{100 * record['ci95'][1]:.1f})")
  paths = leaderboard.write(results_dir, tmp_path, lead=table)
  md = paths["markdown"].read_text()
  assert md.startswith("## Does pre-training help?") and table.conclusion in md
  page = paths["html"].read_text()
  assert page.index('class="summary"') < page.index('id="board"')
  dom, console = chromium(paths["html"].as_uri())
  assert console == [] and "Pre-training helps in-domain" in dom


def test_one_colour_per_checkpoint_in_every_figure(results_dir, monkeypatch):
  """Every line or point drawn for a checkpoint, in every figure, has that checkpoint's colour, and no two
  checkpoints share one."""
  import matplotlib.colors
  figures = []
  monkeypatch.setattr(plotting, "png_bytes", lambda fig, dpi=90: figures.append(fig) or b"")
  records = results.load_all(results_dir)
  fake_ft = dict(results.load(results_dir / "pixels" / "digits.json"), protocol="finetune")  # a second protocol:
  titles = [t for t, _ in leaderboard.plots(records + [fake_ft])]                            # the scatter appears
  assert len(figures) == len(titles) >= 2
  colors = leaderboard.checkpoint_colors(r["checkpoint"]["name"] for r in records)
  seen = {}
  for fig in figures:
    for ax in fig.axes:
      for line in ax.get_lines():
        name = line.get_label().split(" (ECE")[0]
        if name in colors:
          seen.setdefault(name, set()).add(matplotlib.colors.to_hex(line.get_color()))
      for points, text in zip(ax.collections, [t.get_text() for t in ax.texts]):
        seen.setdefault(text, set()).add(matplotlib.colors.to_hex(points.get_facecolor()[0]))
  assert set(seen) == set(colors)
  assert all(len(c) == 1 for c in seen.values()), seen
  assert len({next(iter(c)) for c in seen.values()}) == len(colors)
  assert {n: next(iter(c)) for n, c in seen.items()} == {n: matplotlib.colors.to_hex(c) for n, c in colors.items()}


@pytest.mark.parametrize("far_cis, words", [
    ([(0.01, 0.02)], "it transfers there too"),
    ([(-0.02, -0.01)], "it does not transfer there: the baselines do better"),
    ([(-0.02, -0.01), (-0.01, 0.01)], "it does not transfer there: the baselines do as well or better"),
    ([(-0.01, 0.01)], "no clear difference there"),
    ([(0.01, 0.02), (-0.02, -0.01)], "the gain carries over only in part"),
])
def test_conclusion_words_follow_the_verdicts(far_cis, words):
  def gain(in_domain, lo, hi):
    row = compare.TaskComparison("t", "top1", 0.5, 0.5, (lo + hi) / 2, (lo, hi), 1.0, 1.0, 0, 0, 0.01)
    return pretraining_gain.Gain(Column("10-shot", "t", in_domain, ("random_init",)), "random_init", row)
  line = pretraining_gain.conclusion([gain(True, 0.01, 0.02)] + [gain(False, *ci) for ci in far_cis], "digits")
  assert line.startswith("Pre-training helps in-domain: 10-shot +1.5 points vs random_init (95% CI +1.0…+2.0).")
  assert f"Far (digits): {words} — " in line
  assert pretraining_gain.conclusion([gain(True, -0.01, 0.02)], None).startswith(
      "Pre-training did NOT clearly help in-domain: 10-shot +0.5 points")
