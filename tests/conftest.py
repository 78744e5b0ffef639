"""Test-session setup and the objects several test files share.

- 8 virtual CPU devices, so every sharded path runs on a multi-device mesh.
- Per-test timeouts (pytest-timeout, `timeout` in pyproject.toml; long tests carry `@pytest.mark.timeout(s)`), and
  subprocesses that never outlive their test: `subprocess_timeout()` is the time the running test has left.
- Session fixtures for what several files build: the embedded data_dir, random ViT checkpoints (`.npz`) and a
  tiny pre-training run (`digits_tiny`). They are built once per test process; a test that changes one copies it.
"""
import os

# Must happen before jax is imported anywhere; respects an XLA_FLAGS the caller set on purpose.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import shutil  # noqa: E402
import tempfile  # noqa: E402

# One XLA compilation cache for the test session, its xdist workers and every subprocess they start (they inherit the
# environment): many tests and CLI subprocesses compile the same small ViTs, probes and train steps, and a cache hit
# replaces a compile. Results do not change: an entry is the executable XLA built, keyed by the computation, its
# compile options, the devices and the jax version. A cache directory the caller set is used and kept.
_OWN_COMPILE_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_COMPILE_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="evalkit-tests-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import dataclasses  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

# Seconds a subprocess is given when no per-test timeout is known (pytest-timeout absent or disabled).
NO_TIMEOUT_FALLBACK_S = 1800
# A subprocess is stopped this long before its test's timeout fires, so the failure names the command that hung
# (subprocess.TimeoutExpired) instead of only dumping the waiting test's stack.
SUBPROCESS_MARGIN_S = 10


def pytest_sessionfinish(session):
  """Removes the compilation cache this session made (in the main process, after its workers ended)."""
  if _OWN_COMPILE_CACHE and not hasattr(session.config, "workerinput"):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(config, items):
  """Files with slow tests run first (the order inside a file is kept): with two workers, the long files start at
  once, in parallel, and the short ones fill the gaps, instead of one long file running alone at the end."""
  files_with_slow_tests = {item.path for item in items if item.get_closest_marker("slow")}
  items.sort(key=lambda item: item.path not in files_with_slow_tests)


_test_deadline: float | None = None  # time.monotonic() at which the running test's timeout fires


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item, settings):
  """pytest-timeout starts a test's timer (setup, call and teardown together): remember when it fires."""
  global _test_deadline
  _test_deadline = time.monotonic() + settings.timeout if settings.timeout and settings.timeout > 0 else None


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item):
  global _test_deadline
  _test_deadline = None


def subprocess_timeout() -> float:
  """Seconds a subprocess started now may run: what the running test has left, less a margin."""
  if _test_deadline is None:
    return NO_TIMEOUT_FALLBACK_S
  return max(1.0, _test_deadline - time.monotonic() - SUBPROCESS_MARGIN_S)


# For a subprocess whose results are compared only with other subprocesses of the same test (a demo run, a kill and its
# rerun): one CPU device, as a user's run has. On 2 cores the 8 virtual devices cost ≈ 1.5× in training steps, and the
# multi-device paths are covered by the tests that compare device counts.
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
# Committed reference files: timm fixtures, result files of older schemas, regression pins.
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def run_cli(*args, env_extra=None) -> subprocess.CompletedProcess:
  """`evalkit <args>` in a subprocess, as a user runs it (this test session's environment plus `env_extra`)."""
  env = {**os.environ, **(env_extra or {})}
  return subprocess.run([sys.executable, "-m", "evalkit.cli", *args], capture_output=True, text=True, env=env,
                        timeout=subprocess_timeout())


def error_lines(proc) -> list[str]:
  return [line for line in proc.stderr.splitlines() if line.startswith("evalkit: error")]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One TFDS data_dir per test session: embedded datasets are prepared once and shared by all tests."""
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def random_vit(tmp_path_factory):
  """`random_vit(seed, pool_type, num_classes=None)`: a mu/7 ViT at random init (28×28 inputs) saved once per session
  as a big_vision-style `.npz`; returns its path. Read-only: copy it before changing it."""
  import jax
  import jax.numpy as jnp

  from evalkit import checkpoints
  from evalkit.models import vit

  root, made = tmp_path_factory.mktemp("random_vit"), {}

  def make(seed: int, pool_type: str, num_classes: int | None = None):
    key = (seed, pool_type, num_classes)
    if key not in made:
      model = vit.ViT(num_classes=num_classes, variant="mu/7", pool_type=pool_type)
      params = model.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 3)))["params"]
      made[key] = root / f"mu7_{pool_type}_{num_classes or 'nohead'}_seed{seed}.npz"
      checkpoints.save_npz(made[key], params)
    return made[key]

  return make


def digits_tiny_config(**overrides):
  """The `digits_tiny` pre-training config (60 steps on digits) with field overrides."""
  from evalkit.train import pretrain_configs
  return dataclasses.replace(pretrain_configs.digits_tiny(), **overrides)


@pytest.fixture(scope="session")
def digits_tiny_run(data_dir, tmp_path_factory):
  """A tiny pre-trained checkpoint: `digits_tiny` (60 uninterrupted steps) with a cooldown branch at step 30.

  Returns (run, exported): the built run and its exported checkpoints ({"cooldown_30": path, "final": path}; each
  has a `.toml` card beside it). Read-only: a test that trains further or changes files works in its own workdir.
  """
  from evalkit.train import pretrain
  workdir = tmp_path_factory.mktemp("digits_tiny")
  run = pretrain.build_run(digits_tiny_config(cooldown_at=[30]), str(workdir), data_dir=data_dir, progress=False)
  return run, pretrain.train(run)
