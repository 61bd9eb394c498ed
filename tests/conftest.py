"""Test set-up: eight fake CPU devices, so every test can compare 1 against N devices."""
import os

import pytest

# Must happen before JAX initialises its backends. Tests compile many tiny programs and run each
# a few times: XLA's backend optimisation level 0 cuts compile time by 2-5x on CPU.
from tests.helpers import TEST_XLA_FLAGS  # noqa: E402  (imports JAX, but starts no backend)

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import contrastive_jax  # noqa: E402,F401  (sets CPU compiler workarounds before JAX starts)
import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
# Tests build the same tiny models many times; a persistent compilation cache lets every
# compilation after the first be read back from disk instead of recompiled.
jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("CJ_TEST_COMPILATION_CACHE", "/tmp/contrastive_jax_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# `make test-jax-only` sets CJ_JAX_ONLY=1 in an environment without the `tf` extra, as on a
# GPU host. There a test whose config needs TensorFlow stops at data.require_tensorflow, in the
# test's process or in a command it runs (whose one-line `Error:` the test's assertion shows):
# that test is reported as skipped, with the reason. Any other failure stays a failure, and
# without CJ_JAX_ONLY (the main suite, `make test`) nothing is turned into a skip. The files
# below are about running without TensorFlow: a TensorFlow error there is always a failure.
_JAX_ONLY = os.environ.get("CJ_JAX_ONLY") == "1"
_NEEDS_TF = "TensorFlow is not installed, but "
_TF_FREE_BY_DESIGN = ("test_without_tensorflow.py", "test_packaging.py", "test_notebooks.py")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  report = outcome.get_result()
  if not (_JAX_ONLY and report.failed and call.excinfo is not None):
    return
  if os.path.basename(str(item.path)) in _TF_FREE_BY_DESIGN:
    return
  message = str(call.excinfo.value)
  if _NEEDS_TF not in message:
    return
  why = message.split(_NEEDS_TF, 1)[1].split(". Install", 1)[0]
  report.outcome = "skipped"
  report.longrepr = (str(item.path), (item.location[1] or 0) + 1, f"needs the tf extra: {why}")
