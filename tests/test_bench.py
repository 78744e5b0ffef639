"""The prepared accelerator benchmark runs end to end (reduced size, on the CPU) and prints its one table."""
import os
import re
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@pytest.mark.slow  # ≈ 25 s on 2 cores: a dozen small compilations, a JPEG dataset prepared, 2 worker processes
def test_accelerator_benchmark_smoke_run_prints_every_row():
  proc = subprocess.run([sys.executable, "accelerator.py", "--smoke"], cwd=BENCH, capture_output=True, text=True,
                        timeout=240, env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = {line.split("  ")[0]: line for line in proc.stdout.splitlines()}
  for name in ("features smoke ViT @28 float32", "features smoke ViT @28 bfloat16", "fine-tune step smoke ViT @28"):
    row = next(line for key, line in rows.items() if key.startswith(name))
    rate, mfu = re.search(r"([\d.]+) (?:img|ex)/s\s+([\d.]+)%", row).groups()
    assert float(rate) > 0 and 0 < float(mfu) <= 100, row
  pipeline = next(line for key, line in rows.items() if key.startswith("input pipeline"))
  assert float(re.search(r"([\d.]+) img/s", pipeline).group(1)) > 0, pipeline
  assert re.search(r"few-shot suite.*\d+\.\d\d s.*LOO sweep", proc.stdout), proc.stdout
