"""Test-session setup: 8 virtual CPU devices, so every sharded path runs on a multi-device mesh."""
import os

# Must happen before jax is imported anywhere; respects an XLA_FLAGS the caller set on purpose.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data_dir per test session: embedded datasets are prepared once and shared by all tests."""
  return str(tmp_path_factory.mktemp("tfds"))
