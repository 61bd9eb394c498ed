"""Where the command lines find config files: a path, or the name of a config the package ships.

`--config=configs/simclr.py[:preset]` names a file, as in a clone of the repository; where no
such file exists relative to the working directory (an installed package run from anywhere),
the same spec, or the bare name `--config=simclr[:preset]`, means the config of that name that
ships with the package. The wheel installs the repository's top-level `configs/` folder as
`contrastive_jax/_configs` (setup.cfg maps it); in a clone or an editable install the folder
next to the package is used.

Pure standard library, absl and ml_collections: resolving a name imports no JAX.
"""
from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

PACKAGED = "_configs"  # contrastive_jax/<PACKAGED>/ in a wheel: the top-level configs/ folder.
_PACKAGE_ROOT = os.path.dirname(os.path.abspath(__file__))


def config_dir() -> str:
  """The folder of the shipped configs: inside the installed package, else the clone's."""
  packaged = os.path.join(_PACKAGE_ROOT, PACKAGED)
  if os.path.isdir(packaged):
    return packaged
  return os.path.join(os.path.dirname(_PACKAGE_ROOT), "configs")


def names() -> list[str]:
  """Names of the shipped configs (`simclr`, `eval`, ...)."""
  folder = config_dir()
  if not os.path.isdir(folder):
    return []
  return sorted(f[:-3] for f in os.listdir(folder) if f.endswith(".py") and f[0] != "_")


def resolve_path(path: str) -> str:
  """The config file `path` means: itself where it exists, else the shipped config it names.

  A shipped config is named by its bare name (`simclr`, `simclr.py`) or by its path in the
  repository (`configs/simclr.py`). Raises ValueError naming the shipped configs otherwise.
  """
  if os.path.isfile(path):
    return path
  folder, base = os.path.split(os.path.normpath(path))
  name = base.removesuffix(".py")
  if folder in ("", "configs") and name in names():
    return os.path.join(config_dir(), f"{name}.py")
  raise ValueError(f"config file {path!r} not found. Give the path of a config file or the "
                   f"name of a shipped config: {', '.join(names()) or '(none found)'}.")


def resolve(spec: str) -> str:
  """`FILE[:ARG]` with FILE resolved by `resolve_path`; ARG is passed on unchanged."""
  path, sep, arg = spec.partition(":")
  return resolve_path(path) + sep + arg


class _ResolvingParser(flags.ArgumentParser):
  """Hands ml_collections' own config file parser the resolved path."""

  def __init__(self, inner: flags.ArgumentParser):
    self._inner = inner

  def parse(self, argument):
    return self._inner.parse(resolve(argument))

  def flag_type(self) -> str:
    return self._inner.flag_type()


def define_config_flag(name: str, default: str | None, help_string: str) -> flags.FlagHolder:
  """`config_flags.DEFINE_config_file` (locked, `--<name>.<key>=<value>` overrides) whose value
  may also name a shipped config; `default` is resolved the same way, when the flag is defined."""
  holder = config_flags.DEFINE_config_file(
      name, None if default is None else resolve(default), help_string, lock_config=True)
  flag = flags.FLAGS[name]
  flag.parser = _ResolvingParser(flag.parser)
  return holder
