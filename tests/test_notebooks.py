"""The notebooks in notebooks/ run top to bottom on their offline path (digits, nothing
downloaded), with small parameters put in place of their parameter cell, and are committed
without outputs.

Each runs in a fresh kernel of this interpreter (a kernel spec written for the test, so no
other Python's `python3` kernel can answer) on one CPU device, with the tests' XLA flags and
compilation cache.
"""
import json
import os
import re
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
QUICKSTART = os.path.join(NOTEBOOKS, "colab_quickstart.ipynb")
RETRIEVAL = os.path.join(NOTEBOOKS, "features_retrieval.ipynb")
KERNEL = "contrastive-jax-test"


def _read(path: str) -> nbformat.NotebookNode:
  with open(path, encoding="utf-8") as f:
    return nbformat.read(f, as_version=4)


def with_parameters(nb: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
  """`nb` with `NAME = <repr(value)>` in its parameter cell for each keyword; every name must
  be a parameter the cell defines, so a renamed one fails here rather than being ignored."""
  (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
  source = cell.source
  for name, value in values.items():
    source, found = re.subn(rf"^{name} = [^#\n]*", f"{name} = {value!r}  ", source, flags=re.M)
    assert found == 1, f"{name} is not a parameter of this notebook"
  cell.source = source
  return nb


def _execute(nb: nbformat.NotebookNode, cwd) -> nbformat.NotebookNode:
  NotebookClient(nb, kernel_name=KERNEL, timeout=300, allow_errors=False,
                 resources={"metadata": {"path": str(cwd)}}).execute()
  return nb


def _outputs(nb: nbformat.NotebookNode, kind: str) -> list:
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
          if kind in o.get("data", {})]


def _text(nb: nbformat.NotebookNode) -> str:
  return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                 for o in c.outputs)


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
  """Environment of the notebook kernels: this interpreter, one CPU device, the test cache."""
  tmp = tmp_path_factory.mktemp("jupyter")
  spec = tmp / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "contrastive_jax tests", "language": "python"}))
  commands = helpers.command_env()  # What the command-line tests run with.
  env = {key: commands[key] for key in ("JAX_PLATFORMS", "XLA_FLAGS", "CUDA_VISIBLE_DEVICES",
                                        "JAX_COMPILATION_CACHE_DIR",
                                        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
  env.update(JUPYTER_PATH=str(tmp), IPYTHONDIR=str(tmp / "ipython"),
             MPLBACKEND="module://matplotlib_inline.backend_inline")
  with pytest.MonkeyPatch.context() as mp:
    for key, value in env.items():
      mp.setenv(key, value)
    yield


@pytest.fixture(scope="module")
def quickstart(kernel_env, tmp_path_factory):
  """The quick start notebook run offline: 3 steps of the tiny preset, the tiny evaluation."""
  cwd = tmp_path_factory.mktemp("quickstart")
  nb = with_parameters(_read(QUICKSTART), OFFLINE=True, STEPS=3, WORKDIR="run",
                       OFFLINE_PRESET="tiny", EVAL_PRESET="tiny")
  return _execute(nb, cwd), cwd / "run"


@pytest.mark.parametrize("path", [QUICKSTART, RETRIEVAL], ids=os.path.basename)
def test_notebooks_are_committed_without_outputs(path):
  nb = _read(path)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code
  for cell in code:
    assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
  assert [c for c in code if "parameters" in c.metadata.get("tags", ())], "no parameter cell"


def test_quickstart_pretrains_and_draws_the_low_data_curve_offline(quickstart):
  nb, workdir = quickstart
  results = json.loads((workdir / "results.json").read_text())
  assert results["step"] == 3 and np.isfinite(results["train"]["loss"])
  evaluation = json.loads((workdir / "eval" / "results.json").read_text())
  linear = [r for r in evaluation["rows"] if r["protocol"] == "linear"]
  # configs/eval.py:tiny probes at 25% and 100% of the labels; kNN runs once, with all.
  assert sorted({r["label_fraction"] for r in linear}) == [0.25, 1.0]
  assert {r["protocol"] for r in evaluation["rows"]} == {"linear", "knn"}
  assert (workdir / "eval" / "low_data_curve.png").stat().st_size > 0
  # Two figures: the grid of augmented views and the low-data curve.
  assert len(_outputs(nb, "image/png")) == 2
  text = _text(nb)
  assert "contrastive_jax from" in text and "cpu: 1 device(s)" in text
  assert "simclr:tiny" in text and "step 3: loss" in text


# Appended to the retrieval notebook: its neighbours and precision@K against a brute-force
# transcription in float64 (every pair's cosine similarity, one query at a time). Neighbours
# are compared by similarity, so float32 rounding between near-equal candidates cannot fail it.
_CHECK = """
import json
def _brute(f, lab, k):
  f = f.astype(np.float64)
  f = f / np.linalg.norm(f, axis=1, keepdims=True)
  sims, hits = [], []
  for q in range(len(f)):
    s = {j: float(np.dot(f[q], f[j])) for j in range(len(f)) if j != q}
    sims.append(s)
    hits += [lab[j] == lab[q] for j in sorted(s, key=lambda j: (-s[j], j))[:k]]
  return sims, float(np.mean(hits))
_sims, _p = _brute(features, labels, K)
_, _p_random = _brute(random_features, labels, K)
_gap = max(abs(_sims[q][int(n)] - want) for q in range(len(features))
           for n, want in zip(nearest[q], sorted(_sims[q].values(), reverse=True)[:K]))
print("CHECK " + json.dumps({
    "gap": _gap, "self": bool(any(q in nearest[q] for q in range(len(features)))),
    "precision": [PRECISION["pretrained"], _p], "random": [PRECISION["random_init"], _p_random],
    "steps": [int(step), int(state.step)]}))
"""


def test_retrieval_finds_neighbours_with_the_quickstart_checkpoint(quickstart, tmp_path):
  _, workdir = quickstart
  nb = with_parameters(_read(RETRIEVAL), WORKDIR=str(workdir), NUM_QUERIES=3, K=4)
  nb.cells.append(nbformat.v4.new_code_cell(_CHECK))
  _execute(nb, tmp_path)
  assert len(_outputs(nb, "image/png")) == 1
  text = _text(nb)
  printed = dict(re.findall(r"precision@4 (\w+): ([\d.]+)%", text))
  assert set(printed) == {"pretrained", "random_init"}
  check = json.loads(text.split("CHECK ", 1)[1].splitlines()[0])
  assert check["gap"] < 1e-5 and not check["self"], check
  # One neighbour swapped between near-equal candidates moves precision by 1 / (N K) < 0.1%.
  np.testing.assert_allclose(*check["precision"], atol=0.005)
  np.testing.assert_allclose(*check["random"], atol=0.005)
  assert float(printed["pretrained"]) == pytest.approx(100 * check["precision"][0], abs=0.05)
  assert check["steps"] == [3, 3]  # the latest checkpoint of the quick start's run


def test_unknown_parameter_is_refused():
  with pytest.raises(AssertionError, match="NOT_A_PARAMETER"):
    with_parameters(_read(QUICKSTART), NOT_A_PARAMETER=1)
