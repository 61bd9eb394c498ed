"""Splits held as numpy arrays (scikit-learn digits, .npz files), read and checked with numpy.

The tf.data pipeline (`sources.ArraySource`) and the TensorFlow-free path (`in_memory`) both read
these splits from here, so they see the same pixels and raise the same errors. So does the
evaluation view: `eval_arrays` resizes and centre-crops with numpy transcriptions of the TF ops
the pipeline uses (`tf.image.resize` bicubic and bilinear, half-pixel centres, no antialiasing),
so a machine without TensorFlow probes and monitors an encoder on exactly the images a machine
with it would.
"""
from __future__ import annotations

import abc
import io
import os

import ml_collections
import numpy as np

from contrastive_jax import storage

SOURCES = ("digits", "tfds", "folder", "npz")
ARRAY_SOURCES = ("digits", "npz")  # Readable without TensorFlow.
_CHUNK = 1024  # Images per resize call: bounds the float copy of a large split.


def shard_indices(n: int, process_index: int, process_count: int) -> np.ndarray:
  """Strided shard: disjoint across processes, union is range(n), sizes differ by at most 1."""
  return np.arange(n)[process_index::process_count]


def eval_block(positions: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """This process's contiguous block of `positions` for one evaluation pass: disjoint across
  processes, union is `positions`, sizes differ by at most 1 (the first blocks are larger)."""
  return np.array_split(np.asarray(positions, np.int64), process_count)[process_index]


def checked_positions(positions: np.ndarray | None, num_examples: int,
                      split: str) -> np.ndarray:
  """`positions` as sorted unique int64 indices into a split of `num_examples` (None: all)."""
  if positions is None:
    return np.arange(num_examples, dtype=np.int64)
  positions = np.asarray(positions, np.int64)
  if positions.ndim != 1 or np.any(np.diff(positions) <= 0):
    raise ValueError(f"Positions into split {split!r} must be sorted, unique and 1-D.")
  if len(positions) and (positions[0] < 0 or positions[-1] >= num_examples):
    raise ValueError(f"Positions must lie in [0, {num_examples}) for split "
                     f"{split!r}; got [{positions[0]}, {positions[-1]}].")
  return positions


def to_rgb(images: np.ndarray, where: str) -> np.ndarray:
  """[N, H, W] / [N, H, W, 1|3|4] uint8 or float in [0, 1] -> [N, H, W, 3], same dtype family."""
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"{where}: images must be [N, H, W] or [N, H, W, C] with C in 1, 3, 4; "
                     f"got shape {images.shape}.")
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  elif images.shape[-1] == 4:
    images = images[..., :3]  # Drop alpha; RGBA -> RGB.
  if np.issubdtype(images.dtype, np.floating):
    lo, hi = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if lo < 0 or hi > 1:
      raise ValueError(f"{where}: float images must lie in [0, 1], found [{lo:g}, {hi:g}]. "
                       "Store uint8 in [0, 255] or divide by 255.")
    return images.astype(np.float32)
  if images.dtype != np.uint8:
    if images.size and (images.min() < 0 or images.max() > 255):
      raise ValueError(f"{where}: integer images must lie in [0, 255].")
    images = images.astype(np.uint8)
  return images


class ArraySplits(abc.ABC):
  """A dataset whose splits load as (images [N, H, W, 3], int32 labels [N]), loaded once."""

  num_classes: int = 0

  def __init__(self):
    self._splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  @abc.abstractmethod
  def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads the split or raises ValueError naming the config key to fix."""

  def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in self._splits:
      self._splits[split] = self._load(split)
    return self._splits[split]

  def num_examples(self, split: str) -> int:
    return len(self.arrays(split)[1])


class Digits(ArraySplits):
  """scikit-learn's bundled 8x8 digits, offline; a fixed stratified 80/20 train/test split,
  resized bilinearly to image_size (float32 in [0, 1])."""

  def __init__(self, image_size: int):
    super().__init__()
    from sklearn import datasets, model_selection  # pylint: disable=g-import-not-at-top
    digits = datasets.load_digits()
    self._x = digits.images
    self._y = digits.target.astype(np.int32)
    train, test = model_selection.train_test_split(
        np.arange(len(self._y)), test_size=0.2, random_state=0, stratify=self._y)
    self._index = {"train": np.sort(train), "test": np.sort(test)}
    self._size = image_size
    self.num_classes = 10

  def _load(self, split):
    if split not in self._index:
      raise ValueError(f"Unknown digits split {split!r}; valid splits: train, test.")
    idx = self._index[split]
    x = np.repeat((self._x[idx].astype(np.float32) / 16.0)[..., None], 3, axis=-1)
    x = resize(x, (self._size, self._size), "bilinear")
    return np.clip(x, 0.0, 1.0), self._y[idx]


class Npz(ArraySplits):
  """`images` and `labels` arrays in an .npz file (or `<split>_images` / `<split>_labels`).

  A "{split}" in the path is replaced by the split name, for one file per split. Labels must lie
  in [0, num_classes) or be -1 (unlabelled); num_classes comes from config.data.num_classes, or
  is inferred as max label + 1 over the train and eval splits.
  """

  def __init__(self, path: str, num_classes: int | None, splits: tuple[str, ...]):
    super().__init__()
    self._path = path
    self._configured_classes = num_classes
    self._raw_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if not path:
      raise ValueError('config.data.path must name an .npz file when config.data.source="npz".')
    if num_classes:
      self.num_classes = num_classes
    else:
      labels = [self._raw(s)[1] for s in splits if s]
      self.num_classes = int(max(lab.max(initial=-1) for lab in labels)) + 1

  def _file(self, split: str) -> str:
    return self._path.replace("{split}", split)

  def _raw(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    if split not in self._raw_cache:
      self._raw_cache[split] = self._read(split)
    return self._raw_cache[split]

  def _read(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    path = self._file(split)
    if not storage.path(path).is_file():
      raise ValueError(f"npz file {path!r} (config.data.path) does not exist.")
    source = io.BytesIO(storage.path(path).read_bytes()) if storage.is_remote(path) else path
    with np.load(source) as f:
      keys = list(f.keys())
      for ik, lk in ((f"{split}_images", f"{split}_labels"), ("images", "labels")):
        if ik in f and lk in f:
          images, labels = f[ik], f[lk]
          break
      else:
        raise ValueError(f"npz file {path!r} has arrays {keys}; expected 'images' and 'labels' "
                         f"(or '{split}_images' and '{split}_labels').")
    where = f"npz file {path!r}"
    if labels.ndim != 1 or len(labels) != len(images):
      raise ValueError(f"{where}: labels must be 1-D with one entry per image; got labels "
                       f"{labels.shape} for images {images.shape}.")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"{where}: labels must be integers, got dtype {labels.dtype}.")
    return to_rgb(images, where), labels.astype(np.int32)

  def _load(self, split):
    images, labels = self._raw(split)
    bad = labels[(labels < -1) | (labels >= self.num_classes)]
    if bad.size:
      origin = ("config.data.num_classes" if self._configured_classes
                else "inferred as max label + 1 of the train and eval splits")
      raise ValueError(
          f"Label {int(bad[0])} out of range in npz file {self._file(split)!r} (split {split!r}): "
          f"labels must lie in [0, {self.num_classes}) or be -1 for unlabelled, with num_classes="
          f"{self.num_classes} ({origin}). Fix the labels or set config.data.num_classes.")
    return images, labels


_CACHE: dict[tuple, ArraySplits] = {}


def _stamp(path: str) -> tuple[int, int] | None:
  """Identifies a file's contents cheaply, so a rewritten .npz is read again."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_mtime_ns, st.st_size


def get(config: ml_collections.ConfigDict) -> ArraySplits:
  """The array dataset `config.data` names (source "digits" or "npz"); cached."""
  d = config.data
  if d.source not in ARRAY_SOURCES:
    raise ValueError(f"config.data.source={d.source!r} is not an array source "
                     f"({', '.join(ARRAY_SOURCES)}).")
  key = (d.source, d.path, d.image_size, d.num_classes, d.train_split, d.eval_split)
  if d.source == "npz" and d.path:
    key += tuple(_stamp(d.path.replace("{split}", s)) for s in (d.train_split, d.eval_split) if s)
  if key not in _CACHE:
    _CACHE[key] = (Digits(d.image_size) if d.source == "digits"
                   else Npz(d.path, d.num_classes, (d.train_split, d.eval_split)))
  return _CACHE[key]


# -- Image ops: numpy transcriptions of the tf.image ops of data/augment.py ------------------

_TABLE = 1024  # TF's bicubic looks its weights up in a table of 1/1024 steps.


def _half_pixel_sources(in_size: int, out_size: int) -> np.ndarray:
  scale = np.float32(in_size) / np.float32(out_size)
  return (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)


def _bicubic_table(a: float = -0.5) -> tuple[np.ndarray, np.ndarray]:
  """Keys' cubic kernel at distances i/1024 (near taps) and 1 + i/1024 (far taps)."""
  x = np.arange(_TABLE + 1, dtype=np.float64) / _TABLE
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  x1 = x + 1
  far = ((a * x1 - 5 * a) * x1 + 8 * a) * x1 - 4 * a
  return near.astype(np.float32), far.astype(np.float32)


def resize_weights(in_size: int, out_size: int, method: str) -> np.ndarray:
  """[out_size, in_size] interpolation matrix of `tf.image.resize(method)` along one axis.

  Bilinear: neighbours clamped to the image. Bicubic: Keys' kernel (a = -0.5) at the delta
  rounded to 1/1024, taps outside the image dropped and the rest renormalised, as TF does.
  """
  src = _half_pixel_sources(in_size, out_size)
  base = np.floor(src)
  rows = np.arange(out_size)
  w = np.zeros((out_size, in_size), np.float32)
  if method == "bilinear":
    lerp = (src - base).astype(np.float32)
    lo = np.clip(base, 0, in_size - 1).astype(np.int64)
    hi = np.clip(np.ceil(src), 0, in_size - 1).astype(np.int64)
    np.add.at(w, (rows, lo), 1.0 - lerp)
    np.add.at(w, (rows, hi), lerp)
    return w
  if method != "bicubic":
    raise ValueError(f"Unknown resize method {method!r}; valid: bilinear, bicubic.")
  near, far = _bicubic_table()
  offset = np.rint((src - base) * np.float32(_TABLE)).astype(np.int64)
  base = base.astype(np.int64)
  taps = ((-1, far[offset]), (0, near[offset]), (1, near[_TABLE - offset]),
          (2, far[_TABLE - offset]))
  for shift, weight in taps:
    idx = base + shift
    inside = (idx >= 0) & (idx < in_size)
    w[rows[inside], idx[inside]] += weight[inside]
  return w / w.sum(axis=1, keepdims=True)


def resize(images: np.ndarray, hw: tuple[int, int], method: str = "bicubic") -> np.ndarray:
  """float32 [N, H, W, C] -> [N, h, w, C]: `tf.image.resize` without antialiasing."""
  x = images.astype(np.float32, copy=False)
  if x.shape[1:3] == tuple(hw):
    return x.copy()  # Both kernels interpolate: the same grid gives the same pixels.
  wy = resize_weights(x.shape[1], hw[0], method)
  wx = resize_weights(x.shape[2], hw[1], method)
  return np.einsum("oh,nhwc,pw->nopc", wy, x, wx, optimize=True).astype(np.float32)


def to_float01(images: np.ndarray) -> np.ndarray:
  """uint8 [0, 255] -> float32 [0, 1]; float images are taken to be in [0, 1] already."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) / np.float32(255.0)
  return images.astype(np.float32, copy=False)


def center_crop_resize(images: np.ndarray, size: int, crop_fraction: float = 1.0,
                       method: str = "bicubic") -> np.ndarray:
  """`augment.center_crop_resize` for a batch of same-sized images: the shorter side resized to
  size / crop_fraction, the central size x size square, clipped to [0, 1]; float32."""
  h, w = images.shape[1:3]
  factor = np.float32(size / crop_fraction) / np.float32(min(h, w))
  new_h = max(int(np.rint(np.float32(h) * factor)), size)
  new_w = max(int(np.rint(np.float32(w) * factor)), size)
  x = resize(to_float01(images), (new_h, new_w), method)
  y0, x0 = (new_h - size) // 2, (new_w - size) // 2
  return np.clip(x[:, y0:y0 + size, x0:x0 + size], 0.0, 1.0)


def eval_arrays(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
  """The whole split in the evaluation view (`transforms.eval_view`): (float32 [N, S, S, 3] in
  [0, 1], int32 [N]), in the source's order."""
  d = config.data
  images, labels = get(config).arrays(split)
  out = np.empty((len(labels), d.image_size, d.image_size, 3), np.float32)
  for i in range(0, len(labels), _CHUNK):
    out[i:i + _CHUNK] = center_crop_resize(images[i:i + _CHUNK], d.image_size,
                                           d.eval_crop_fraction)
  return out, labels
