"""The package's imports run one way: read with `ast`, checked against the table below.

Units are the top-level modules and packages of contrastive_jax. A unit may import itself and
the units its row lists, nothing else (lazy imports inside functions count too). Files inside
one unit form no cycle either, and the data layer never names a method.
"""
import ast
import os
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "contrastive_jax")
BOTTOM = ("ops", "input_spec", "presets", "parallel", "distributed", "preemption", "faults",
          "optim", "storage", "config_files")

# unit -> the units it may import. Read from the bottom: ops and plain values first, then
# losses/models, data, methods, the step, runs and evaluators, the loop, the command lines.
ALLOWED = {
    **{unit: set() for unit in BOTTOM},
    "__init__": set(),
    "losses": {"ops"},
    "models": {"ops"},
    "config_lib": {"optim"},
    "writers": {"storage"},
    "checkpointing": {"faults", "storage"},
    "data": {"input_spec", "ops", "storage"},
    "methods": {"input_spec", "losses", "models", "ops", "parallel"},
    "step": {"methods", "parallel"},
    "runs": {"checkpointing", "config_lib", "data", "methods", "optim", "parallel", "step",
             "storage"},
    "evaluators": {"data", "methods", "models", "ops", "optim", "parallel", "presets", "runs",
                   "step", "storage"},
    "train": {"checkpointing", "config_lib", "data", "evaluators", "faults", "input_spec",
              "methods", "optim", "parallel", "preemption", "runs", "step", "storage", "writers"},
    "cli": {"checkpointing", "data", "distributed", "train"},
    "self_training": {"storage", "train"},
    "main": {"cli", "config_files", "config_lib", "presets", "self_training", "train"},
    "evaluate": {"cli", "config_files", "evaluators", "storage"},
    "export": {"checkpointing", "cli", "data", "methods", "models", "optim", "parallel", "runs",
               "step", "storage"},
}
METHOD_NAMES = {"simclr", "suncet", "cpc", "cpc_v2", "supervised", "moco", "moco_v2", "moco_v3",
                "byol", "fixmatch", "mixmatch", "pseudo_label"}


def _files():
  for folder, _, names in os.walk(ROOT):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        yield os.path.relpath(path, ROOT)[:-3].replace(os.sep, "."), path


def _module_of(rel: str) -> str:
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path: str, rel: str) -> set[str]:
  """Dotted contrastive_jax modules (relative to the package) that `path` imports."""
  package = _module_of(rel).rsplit(".", 1)[0] if "." in _module_of(rel) else ""
  if rel.endswith("__init__"):
    package = _module_of(rel)
  out = set()
  for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1] if package else []
        mod = ".".join([*base, node.module] if node.module else base)
        names = [f"contrastive_jax.{mod}.{a.name}" if mod else f"contrastive_jax.{a.name}"
                 for a in node.names]
      else:
        names = [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for name in names:
      if name == "contrastive_jax" or name.startswith("contrastive_jax."):
        out.add(name[len("contrastive_jax."):] if name != "contrastive_jax" else "__init__")
  return out


def _resolve(name: str, modules: set[str]) -> str | None:
  """The package module `name` refers to (`a.b.c` may be module a.b's attribute c)."""
  while name:
    if name in modules:
      return name
    name = name.rsplit(".", 1)[0] if "." in name else ""
  return None


def _graph():
  files = dict(_files())
  modules = {_module_of(rel) for rel in files}
  graph = {}
  for rel, path in files.items():
    me = _module_of(rel)
    graph[me] = {m for m in (_resolve(n, modules) for n in _imports(path, rel))
                 if m and m != me}
  return graph


def test_the_table_covers_every_unit():
  units = {m.split(".")[0] for m in _graph()}
  assert units == set(ALLOWED), f"new or removed units: {units ^ set(ALLOWED)}"


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_imports_point_down(unit):
  bad = []
  for module, deps in _graph().items():
    if module.split(".")[0] != unit:
      continue
    for dep in deps:
      target = dep.split(".")[0]
      if target != unit and target not in ALLOWED[unit] and dep != "__init__":
        bad.append(f"{module} -> {dep}")
  assert not bad, f"imports against the table: {bad}"


def test_no_import_cycles_between_files():
  graph = _graph()
  state: dict[str, int] = {}

  def visit(node, stack):
    state[node] = 1
    for dep in sorted(graph.get(node, ())):
      if dep == "__init__" or (dep in stack and dep == node):
        continue
      if state.get(dep) == 1:
        cycle = stack[stack.index(dep):] + [dep]
        pytest.fail(f"import cycle: {' -> '.join(cycle)}")
      if not state.get(dep):
        visit(dep, stack + [dep])
    state[node] = 2

  for node in sorted(graph):
    if not state.get(node):
      visit(node, [node])


def test_the_data_layer_names_no_method():
  """No `config.<method>` read, no method name as a string, in any data file."""
  found = []
  for rel, path in _files():
    if not rel.startswith("data."):
      continue
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
      if isinstance(node, ast.Attribute) and node.attr in METHOD_NAMES:
        found.append(f"{rel}:{node.lineno} .{node.attr}")
      if isinstance(node, ast.Constant) and node.value in METHOD_NAMES:
        found.append(f"{rel}:{node.lineno} {node.value!r}")
  assert not found, found


def test_the_checker_sees_a_forbidden_import(tmp_path, monkeypatch):
  """The table is enforced: a data module that imports evaluators is reported."""
  fake = tmp_path / "contrastive_jax"
  (fake / "data").mkdir(parents=True)
  (fake / "evaluators").mkdir()
  (fake / "data" / "__init__.py").write_text("from contrastive_jax.evaluators import knn\n")
  (fake / "evaluators" / "__init__.py").write_text("")
  (fake / "evaluators" / "knn.py").write_text("from contrastive_jax import data\n")
  monkeypatch.setattr(sys.modules[__name__], "ROOT", str(fake))
  graph = _graph()
  assert "evaluators.knn" in graph["data"] and "data" in graph["evaluators.knn"]
  with pytest.raises(pytest.fail.Exception, match="import cycle"):
    test_no_import_cycles_between_files()
