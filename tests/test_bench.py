"""The prepared accelerator benchmark (bench/accelerator.py) runs end to end at its reduced size on the CPU and makes
every row of its table."""
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))


@pytest.mark.slow  # ≈ 15 s on 2 cores: a dozen small compilations, a JPEG dataset prepared, 2 worker processes
def test_accelerator_benchmark_smoke_size_makes_every_row():
  import accelerator
  rows = {name: (rate, mfu, note) for name, rate, mfu, note in accelerator.measure(accelerator.SMOKE, "smoke")}
  assert len(rows) == 5, rows
  for name in ("features smoke float32", "features smoke bfloat16", "fine-tune step smoke, batch 16"):
    rate, mfu, _ = rows[name]
    assert float(rate.split()[0]) > 0 and 0 < float(mfu.rstrip("%")) <= 100, (name, rows[name])
  fewshot = next(v for k, v in rows.items() if k.startswith("few-shot suite"))
  assert float(fewshot[0].split()[0]) > 0 and re.search(r"LOO sweep: [\d.]+ s", fewshot[2]), fewshot
  assert float(rows["input pipeline, few-shot pp on 500×375 JPEGs"][0].split()[0]) > 0
