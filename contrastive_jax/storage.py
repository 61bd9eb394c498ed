"""Work directories, evaluation outputs and data paths, on a local disk or in a bucket (gs://).

Every read, write and existence check of such a path goes through `etils.epath`, so the code
is the same for `runs/x` and `gs://bucket/x` (inside tf.data, TensorFlow's `tf.io.gfile`
reads data files). epath reaches a bucket through TensorFlow's filesystem where TensorFlow is
installed, and through fsspec (gcsfs) where it is not or where `EPATH_USE_TF=false`.
Orbax writes array data through TensorStore. How to point each at a storage emulator:

  * epath/fsspec: `STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT` and `EPATH_USE_TF=false`;
  * orbax (TensorStore): `TENSORSTORE_GCS_HTTP_URL=http://127.0.0.1:PORT`;
  * TensorFlow's own GCS filesystem has no endpoint setting, so TensorBoard events written by
    clu (`tf.summary`) and gs:// data read by tf.data cannot reach an emulator. Where epath
    does not use TensorFlow for a remote work directory, `writers.py` writes the event files
    through epath instead.

Bucket objects are whole-object writes: `write_text` writes a file in one request, so readers
never see half of one, and nothing here relies on renames being atomic.
"""
from __future__ import annotations

import json
import os
from typing import Any

from etils import epath


def path(p: str | os.PathLike) -> epath.Path:
  return epath.Path(p)


def is_remote(p: str | os.PathLike) -> bool:
  """True for URLs (gs://, s3://, ...), False for local paths."""
  return "://" in os.fspath(p)


def uses_tensorflow_filesystem(p: str | os.PathLike) -> bool:
  """Whether epath reaches `p` through TensorFlow's filesystem (always true for local paths,
  which TensorFlow and Python reach alike)."""
  if not is_remote(p):
    return True
  if os.environ.get("EPATH_USE_TF", "").lower() in ("false", "no", "f", "0"):
    return False
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec("tensorflow") is not None


def join(root: str | os.PathLike, *parts: str) -> str:
  return os.fspath(epath.Path(root).joinpath(*parts))


def absolute(p: str | os.PathLike) -> str:
  """`p` made absolute if local; URLs unchanged."""
  return os.fspath(p) if is_remote(p) else os.path.abspath(p)


def read_json(p: str | os.PathLike) -> Any:
  return json.loads(epath.Path(p).read_text())


def write_json(p: str | os.PathLike, obj: Any, **kwargs) -> None:
  write_text(p, json.dumps(obj, indent=2, **kwargs))


def write_text(p: str | os.PathLike, text: str) -> None:
  """Writes `text` to `p`, creating its folder. Local files are written beside and renamed, so
  a reader (another process) never sees half a file; bucket objects appear whole anyway."""
  p = epath.Path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(p):
    p.write_text(text)
    return
  tmp = p.parent / f".{p.name}.tmp"
  tmp.write_text(text)
  tmp.replace(p)


def write_bytes(p: str | os.PathLike, data: bytes) -> None:
  p = epath.Path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  p.write_bytes(data)
