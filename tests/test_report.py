"""Leaderboard report (Markdown, CSV, self-contained HTML checked in headless Chromium) and paired comparisons."""
import csv
import io
import json
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from evalkit import distributed, evaluate, results, subjects, tasks
from evalkit.analysis import compare
from evalkit.report import leaderboard

from conftest import subprocess_timeout


@pytest.fixture(scope="module")
def results_dir(data_dir, random_vit, tmp_path_factory):
  """Real results on digits for raw pixels and two random-init ViTs, plus one computed under another spec."""
  out = tmp_path_factory.mktemp("report")
  subject_list = [subjects.resolve_subject(subjects.PIXELS)]
  for seed in (0, 1):
    subject_list.append(subjects.resolve_subject(str(random_vit(seed, "map")), name=f"vit_seed{seed}",
                                                 model_kwargs={"variant": "mu/7", "pool_type": "map"}))
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
  """A card's "<task>/<metric>" is shown next to a result only when the result's spec hash is that task's."""
  record = results.load(results_dir / "vit_seed0" / "digits.json")
  record["checkpoint"]["card"] = "vit_g14"
  record["task"]["name"] = "imagenet2012"
  record["headline"]["metric"] = "10shot"
  record["metrics"]["10shot"] = dict(record["metrics"]["10shot"])
  record["task"]["spec_hash"] = tasks.load_task("imagenet2012").spec_hash
  (cell,) = leaderboard.build([record]).cells.values()
  assert cell.published == 84.86
  record["task"]["spec_hash"] = "0123456789abcdef"  # e.g. the same name with 5 seeds or another resolution
  (cell,) = leaderboard.build([record]).cells.values()
  assert cell.published is None
