"""Every leaf key of every config file and preset can be set on the command line.

The overrides go through the real absl / ml_collections parser, as `--config.<key>=<value>` of
`contrastive_jax.main` (or `--eval_config.<key>` of `contrastive_jax.evaluate`). Parsing only:
nothing here builds a model or compiles.
"""
import glob
import importlib.util
import os
import re
from typing import Any, Iterator

import ml_collections
import pytest
from absl import flags

from contrastive_jax import presets
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
# The flag each config file is given with: configs/eval.py is the evaluate command's.
FLAG_NAMES = {"eval.py": "eval_config"}


def _module(path: str):
  spec = importlib.util.spec_from_file_location(f"_cj_keys_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _presets(path: str) -> tuple[str, ...]:
  return tuple(_module(path).PRESETS)


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, type, Any]]:
  """(dotted key, declared type, value) of every leaf; a placeholder's type is its own."""
  for key in config.keys():
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", config.get_type(key), value


def _another(kind: type, value: Any) -> Any:
  """A value of `kind` that differs from `value`, so the test sees the override land."""
  if kind is bool:
    return not value
  if kind is int:
    return (value or 0) + 3
  if kind is float:
    return (value or 0.0) + 0.25
  if kind is str:
    return f"{value}_x" if value else "x"
  if kind is tuple:
    return tuple(_another(type(v), v) for v in value) if value else (3,)
  return value  # NoneType and anything else: the parser is expected to refuse it.


def _cases() -> list:
  cases = []
  for path in CONFIG_FILES:
    for preset in _presets(path):
      cases.append(pytest.param(path, preset, id=f"{os.path.basename(path)}:{preset}"))
  return cases


def test_every_config_file_lists_its_presets():
  """The presets the override test walks are the ones each config file documents and accepts."""
  assert CONFIG_FILES
  for path in CONFIG_FILES:
    module = _module(path)
    assert module.PRESETS, path
    for preset in module.PRESETS:
      assert re.search(rf"\b{preset}\b", module.__doc__), (path, preset)
    with pytest.raises(ValueError, match="preset"):
      module.get_config("no_such_preset")


@pytest.mark.parametrize("path,preset", _cases())
def test_every_leaf_key_can_be_overridden(path, preset):
  flag = FLAG_NAMES.get(os.path.basename(path), "config")
  leaves = list(_leaves(presets.load_config_file(path, preset)))
  assert leaves
  refused = []
  for key, kind, value in leaves:
    new = _another(kind, value)
    text = repr(new) if kind is tuple else str(new)
    try:
      parsed = helpers.parse_config(flag, path, preset, f"--{flag}.{key}={text}")
    except (flags.Error, KeyError, TypeError) as e:
      refused.append(f"{key} ({kind.__name__}): {e}")
      continue
    got = parsed
    for part in key.split("."):
      got = got[part]
    assert got == new and type(got) is type(new), (key, text, got)
  assert not refused, ("Keys the command line cannot set; give each a typed default or "
                       "ml_collections.config_dict.placeholder(<type>):\n" + "\n".join(refused))
