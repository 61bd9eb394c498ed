"""The JAX benchmarks load without TensorFlow, and the NT-Xent one runs at toy size."""
import os
import runpy
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def test_jax_benchmarks_import_no_tensorflow():
  code = ("import runpy, sys\n"
          f"for name in ('train_step', 'nt_xent_scaling'):\n"
          f"  runpy.run_path('{BENCH}/' + name + '.py', run_name='smoke')\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                 env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("devices", [1, 8])
def test_nt_xent_scaling_measures_time_and_memory(devices):
  bench = runpy.run_path(os.path.join(BENCH, "nt_xent_scaling.py"), run_name="smoke")
  r = bench["measure"](32, devices, 8, 1)
  assert r["time_s"] > 0 and r["batch"] == 32 and r["devices"] == devices
  assert r["logits_bytes_per_device"] == 2 * (32 // devices) * 64 * 4
