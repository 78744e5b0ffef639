"""The repository is clean under its linter (`[tool.ruff]` in pyproject.toml: pycodestyle and pyflakes, 120 columns)."""
import subprocess
import sys
from pathlib import Path

from conftest import subprocess_timeout


def test_ruff_check_is_clean():
  root = Path(__file__).resolve().parent.parent
  proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(root)], capture_output=True,
                        text=True, cwd=root, timeout=subprocess_timeout())
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
