"""What each way of cropping whole images for on-device augmentation costs (docs/augmentation.md).

  host    per-image seconds of the tf.data map, one thread, on JPEGs of `--height` x `--width`:
          decode alone; decode + the former raw view (shorter side to S, centre square);
          decode + the canvas raw view (whole image fitted into R x R, padded: what ships now);
          decode + two Inception crops resized to S on the host (the BYOL-style alternative,
          leaving flip, colour and blur to the device).
  device  per-image seconds of the jitted device work on a batch: both views from an S square
          (the former input), from an R canvas with its valid region (now), and the crop stage
          alone from each, so (two views from S) - (crop from S) is what the device does when the
          host has cropped already.

  python experiments/device_crop_costs.py --size=224 --raw_size=448 --height=375 --width=500

The device here is whatever JAX runs on (the CPU on a machine without an accelerator), so its
figures are ratios, not accelerator timings; the FLOP counts printed with them carry over.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_integer("size", 224, "Output size S of a view.")
flags.DEFINE_integer("raw_size", 448, "Canvas side R of the raw view.")
flags.DEFINE_integer("height", 375, "Height of the test JPEGs.")
flags.DEFINE_integer("width", 500, "Width of the test JPEGs.")
flags.DEFINE_integer("images", 64, "JPEGs timed on the host.")
flags.DEFINE_integer("batch", 8, "Batch of the device timing.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (the best is reported).")


def _best(fn, repeats):
  fn()  # warm-up: tracing, compilation
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def host_costs(jpegs):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import augment  # pylint: disable=g-import-not-at-top
  s, r = FLAGS.size, FLAGS.raw_size

  def decode(x):
    return augment.to_float01(tf.io.decode_jpeg(x, channels=3))

  def two_crops(x, seed):
    x = decode(x)
    views = [augment.random_resized_crop(x, k, size=s, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
             for k in tf.unstack(tf.random.experimental.stateless_split(seed, 2))]
    return tf.cast(tf.round(tf.clip_by_value(tf.stack(views), 0, 1) * 255), tf.uint8)

  maps = {
      "decode": lambda x, _: decode(x),
      "decode + centre square (former raw view)":
          lambda x, _: augment.center_crop_resize(decode(x), s, 1.0),
      f"decode + fit in {r} canvas (raw view now)":
          lambda x, _: augment.fit_in_canvas(decode(x), r)[0],
      "decode + two Inception crops on the host": two_crops,
  }
  seeds = tf.random.experimental.stateless_split(tf.constant([0, 1], tf.int64), len(jpegs))
  out = {}
  for name, fn in maps.items():
    ds = tf.data.Dataset.from_tensor_slices((jpegs, seeds)).map(fn, num_parallel_calls=1)
    out[name] = _best(lambda ds=ds: [None for _ in ds], FLAGS.repeats) / len(jpegs)
  return out


def device_costs():
  import jax  # pylint: disable=g-import-not-at-top

  from contrastive_jax.ops import augment as ad  # pylint: disable=g-import-not-at-top
  s, r, b = FLAGS.size, FLAGS.raw_size, FLAGS.batch
  rng = np.random.default_rng(0)
  square = rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)
  canvas = rng.integers(0, 256, (b, r, r, 3), dtype=np.uint8)
  hw = np.tile(np.array([[r * FLAGS.height // FLAGS.width, r]], np.int32), (b, 1))
  spec = ad.AugmentSpec(color_strength=1.0, blur_prob=0.5)

  def views(x, v=None):
    fn = jax.jit(lambda k, x, v: ad.two_views(k, x, spec, size=s, hw=v))
    return lambda: jax.block_until_ready(fn(jax.random.key(0), x, v))

  def crops(x, v=None):
    def crop(k, x, v):
      return ad.random_resized_crop_flip(k, x, scale=(0.08, 1.0), flip=False, size=s, hw=v)
    fn = jax.jit(lambda k, x, v: (crop(k, x, v), crop(k, x, v)))
    return lambda: jax.block_until_ready(fn(jax.random.key(0), x, v))

  return {
      f"two views from a {s} square (former)": _best(views(square), FLAGS.repeats) / b,
      f"two views from a {r} canvas (now)": _best(views(canvas, hw), FLAGS.repeats) / b,
      f"two crops from a {s} square": _best(crops(square), FLAGS.repeats) / b,
      f"two crops from a {r} canvas": _best(crops(canvas, hw), FLAGS.repeats) / b,
  }


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  rng = np.random.default_rng(0)
  # Smooth images compress like photos; noise would make decoding unrepresentatively slow.
  base = rng.uniform(0, 255, (FLAGS.images, FLAGS.height // 8, FLAGS.width // 8, 3))
  jpegs = [tf.io.encode_jpeg(tf.cast(tf.image.resize(im, (FLAGS.height, FLAGS.width)), tf.uint8),
                             quality=90).numpy() for im in base]
  s, r = FLAGS.size, FLAGS.raw_size
  print(f"host, per image, one thread ({FLAGS.height} x {FLAGS.width} JPEGs):")
  for name, sec in host_costs(jpegs).items():
    print(f"  {name:48s} {sec * 1e3:7.2f} ms")
  print(f"device ({FLAGS.batch} images a batch), per image:")
  for name, sec in device_costs().items():
    print(f"  {name:48s} {sec * 1e3:7.2f} ms")
  # Multiply-adds of the crop's two matrix products per view, and bytes shipped per image.
  for side in (s, r):
    print(f"crop from {side}: {(s * side * side + s * s * side) * 3 / 1e6:.0f} M multiply-adds "
          f"per view; {side * side * 3 / 1e3:.0f} kB per image as uint8")
  print(f"two host-cropped views: {2 * s * s * 3 / 1e3:.0f} kB per image as uint8")


if __name__ == "__main__":
  app.run(main)
