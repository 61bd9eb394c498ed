"""The wheel works away from the repository: it ships every subpackage and the configs, and an
installed copy, run from a folder that is not a clone, pretrains and evaluates with configs
named as shipped configs. A config that needs the `tf` extra fails in one line naming it.

The wheel is built from a copy of the sources (no stale build/ folder of the clone can slip
into it) and installed with --no-deps into a fresh venv that reads its dependencies from this
interpreter's site-packages through a .pth file: nothing is downloaded. Site folders named in a
.pth file are added to sys.path without their own .pth files being run, so the editable install
of the development venv (a .pth that installs an import hook) cannot answer the import; the
test checks that `contrastive_jax` comes from the new venv.
"""
import glob
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from contrastive_jax import config_files, presets
from tests import helpers
from tests.test_without_tensorflow import _run_without_tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "contrastive_jax", "configs")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
  tmp = tmp_path_factory.mktemp("wheel")
  src = tmp / "src"
  for name in _SOURCES:
    origin = os.path.join(ROOT, name)
    if os.path.isdir(origin):
      shutil.copytree(origin, src / name,
                      ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    else:
      src.mkdir(exist_ok=True)
      shutil.copy(origin, src / name)
  out = tmp / "dist"
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
       "--no-index", "-w", str(out), str(src)],
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (path,) = glob.glob(str(out / "contrastive_jax-*.whl"))
  return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> str:
  """A venv holding the wheel alone; dependencies come from this interpreter's site-packages."""
  root = tmp_path_factory.mktemp("venv") / "env"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                 timeout=120)
  python = str(root / "bin" / "python")
  proc = subprocess.run(
      [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
       "--no-index", wheel], capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # After the install, so pip never sees the development copy as already installed.
  (purelib,) = glob.glob(str(root / "lib" / "python3*" / "site-packages"))
  with open(os.path.join(purelib, "zz_dependencies.pth"), "w") as f:
    f.write("\n".join(site.getsitepackages()) + "\n")
  return str(root)


def _env() -> dict:
  env = helpers.command_env(PYTHONNOUSERSITE="1")
  env.pop("PYTHONPATH")
  return env


def _run(venv: str, cwd, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run([os.path.join(venv, "bin", "python"), *args], cwd=cwd, env=_env(),
                        capture_output=True, text=True, timeout=timeout, check=False)


def test_the_wheel_holds_every_subpackage_and_every_config(wheel):
  names = zipfile.ZipFile(wheel).namelist()
  packages = {os.path.dirname(n) for n in names if n.endswith("/__init__.py")}
  want = {os.path.relpath(os.path.dirname(p), ROOT)
          for p in glob.glob(os.path.join(ROOT, "contrastive_jax", "**", "__init__.py"),
                             recursive=True)}
  assert packages == want, f"setup.cfg [options] packages misses {want - packages}"
  modules = {n for n in names if n.endswith(".py")}
  for path in glob.glob(os.path.join(ROOT, "contrastive_jax", "**", "*.py"), recursive=True):
    assert os.path.relpath(path, ROOT) in modules, path
  shipped = {os.path.basename(n) for n in names if n.startswith("contrastive_jax/_configs/")}
  assert shipped == {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*"))
                     if p.endswith(".py")}
  metadata = zipfile.ZipFile(wheel).read(
      next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
  requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
  base = [r for r in requires if "extra ==" not in r]
  tf = [r for r in requires if "extra == \"tf\"" in r]
  assert not [r for r in base if "tensorflow" in r or "clu" in r], base
  assert {r.split()[1].split(">")[0] for r in tf} == {"tensorflow-cpu", "tensorflow-datasets",
                                                     "clu"}


@pytest.mark.slow
def test_installed_wheel_pretrains_and_evaluates_outside_the_repository(venv, tmp_path):
  away = tmp_path / "elsewhere"  # No configs/ folder here: names resolve to shipped configs.
  away.mkdir()
  where = _run(venv, away, "-c", "import json, contrastive_jax\n"
               "from contrastive_jax import config_files as c\n"
               "print(json.dumps([contrastive_jax.__file__, c.resolve('configs/simclr.py:tiny'),"
               " c.resolve('eval')]))")
  assert where.returncode == 0, where.stderr[-3000:]
  package, simclr, evals = json.loads(where.stdout)
  site_packages = os.path.realpath(venv)
  for path in (package, simclr, evals):
    assert os.path.realpath(path).startswith(site_packages), path
  assert simclr.endswith(os.path.join("contrastive_jax", "_configs", "simclr.py:tiny"))

  # On-device augmentation: the base install's path, so this runs without the tf extra too.
  train = _run(venv, away, "-m", "contrastive_jax.main", "--config=simclr:tiny",
               "--workdir=run", "--config.augment.on_device=True",
               "--config.evals.linear.at_end=False")
  assert train.returncode == 0, train.stderr[-3000:]
  results = json.loads((away / "run" / "results.json").read_text())
  assert results["step"] == 3 and np.isfinite(results["train"]["loss"])

  # The evaluate command's default config is the shipped eval config; one evaluator of it.
  evaluate = _run(venv, away, "-m", "contrastive_jax.evaluate", "--workdir=run",
                  "--eval_config.only=knn", "--eval_config.evals.knn.k=20")
  assert evaluate.returncode == 0, evaluate.stderr[-3000:]
  table = json.loads((away / "run" / "eval" / "results.json").read_text())
  rows = [r for r in table["rows"] if r["protocol"] == "knn"]
  assert rows and all(0.0 <= r["top1"] <= 1.0 for r in rows), table["rows"]
  assert {r["protocol"] for r in table["rows"]} == {"knn"}
  default = presets.load_config_file(os.path.join(ROOT, "configs", "eval.py"), None).to_dict()
  default["only"], default["evals"]["knn"]["k"] = "knn", 20
  assert table["eval_config"] == json.loads(json.dumps(default))


def test_an_existing_file_wins_and_only_names_or_configs_paths_fall_back(tmp_path, monkeypatch):
  """In a clone (or an editable install) the shipped configs are the clone's configs/."""
  monkeypatch.chdir(tmp_path)
  clone = os.path.join(ROOT, "configs", "simclr.py")
  assert config_files.resolve("configs/simclr.py:tiny") == f"{clone}:tiny"
  assert config_files.resolve("simclr") == config_files.resolve("simclr.py") == clone
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "simclr.py").write_text("def get_config(arg=None):\n  return {}\n")
  assert config_files.resolve("configs/simclr.py:tiny") == "configs/simclr.py:tiny"
  with pytest.raises(ValueError, match="'elsewhere/simclr.py' not found.*simclr, simclr_v2"):
    config_files.resolve("elsewhere/simclr.py")


def test_unknown_config_name_lists_the_shipped_ones(venv, tmp_path):
  proc = _run(venv, tmp_path, "-m", "contrastive_jax.main", "--config=simclr_v9:tiny",
              timeout=120)
  assert proc.returncode == 2
  assert "'simclr_v9' not found" in proc.stderr and "simclr, simclr_v2" in proc.stderr


def test_a_tfds_config_without_tensorflow_fails_in_one_line_naming_the_extra(tmp_path):
  proc = _run_without_tf("contrastive_jax.main", "--config=simclr:cifar10",
                         "--config.augment.on_device=True", f"--workdir={tmp_path / 'run'}")
  assert proc.returncode == 1
  errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
  assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "TensorFlow is not installed" in errors[0]
  assert "pip install 'contrastive_jax[tf]'" in errors[0]


def test_the_environment_has_the_tf_extra_unless_it_is_the_jax_only_one():
  """`make test` installs `.[tf,test]`, so no TensorFlow test can skip itself there; the
  JAX-only environment (`make test-jax-only`, CJ_JAX_ONLY=1) is a GPU host's, without it."""
  installed = {name: importlib.util.find_spec(name) is not None
               for name in ("tensorflow", "tensorflow_datasets", "clu")}
  if os.environ.get("CJ_JAX_ONLY") == "1":
    assert not any(installed.values()), installed
  else:
    assert all(installed.values()), f"{installed}: pip install -e '.[tf,test]'"
