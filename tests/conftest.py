"""Test set-up: eight fake CPU devices, so every test can compare 1 against N devices."""
import os

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
