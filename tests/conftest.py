"""Test-session setup: 8 virtual CPU devices, so every sharded path runs on a multi-device mesh."""
import os

# Must happen before jax is imported anywhere; respects an XLA_FLAGS the caller set on purpose.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# Generous: on a loaded 2-core CI machine the end-to-end runs take several times their quiet-machine minutes.
SLOW_TIMEOUT_S = 1800


def run_cli(*args, env_extra=None, timeout=SLOW_TIMEOUT_S) -> subprocess.CompletedProcess:
  """`evalkit <args>` in a subprocess, as a user runs it (this test session's environment plus `env_extra`)."""
  env = {**os.environ, **(env_extra or {})}
  return subprocess.run([sys.executable, "-m", "evalkit.cli", *args], capture_output=True, text=True, env=env,
                        timeout=timeout)


def error_lines(proc) -> list[str]:
  return [line for line in proc.stderr.splitlines() if line.startswith("evalkit: error")]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data_dir per test session: embedded datasets are prepared once and shared by all tests."""
  return str(tmp_path_factory.mktemp("tfds"))
