"""Host cost of CPC v2's per-patch augmentation: milliseconds per image for `patch_grid` on one
core's tf.function, as each augmentation of the ImageNet preset is switched on in turn.

  python benchmarks/cpc_patch_host.py                 # 260 px crop, 80 px patches, stride 36
  python benchmarks/cpc_patch_host.py --images=50 --repeats=5

The settings run interleaved (one batch of images each, round after round) so that a busy
machine slows them alike; the table reports the median round and each setting's ratio to the
first row. TensorFlow runs on one thread, as a tf.data map call would on one core.
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
flags.DEFINE_integer("images", 30, "Images per setting and round.")
flags.DEFINE_integer("repeats", 3, "Rounds.")
flags.DEFINE_integer("crop", 260, "Side of the training crop.")
flags.DEFINE_integer("patch", 80, "Patch side.")
flags.DEFINE_integer("stride", 36, "Patch stride.")

# Cumulative: each row adds one augmentation to the row above (the ImageNet preset's values).
STEPS = (
    ("jitter, flip, colour drop", dict(spatial_jitter=10, flip=0.5, color_drop=1.0)),
    ("+ colour jitter, grey-scale", dict(color_jitter=0.5, grayscale=0.25)),
    ("+ shear 0.2", dict(shear=0.2)),
    ("+ elastic 0.2", dict(elastic=0.2)),
    ("+ colour histogram 0.2", dict(color_histogram=0.2)),
)


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_inter_op_parallelism_threads(1)
  tf.config.threading.set_intra_op_parallelism_threads(1)
  from contrastive_jax import input_spec  # pylint: disable=g-import-not-at-top
  from contrastive_jax.data import patches  # pylint: disable=g-import-not-at-top

  image = tf.random.stateless_uniform([FLAGS.crop, FLAGS.crop, 3], [0, 0])
  settings, fns = {}, {}
  for name, keys in STEPS:
    settings = dict(settings, **keys)
    grid = input_spec.PatchGrid(patch_size=FLAGS.patch, stride=FLAGS.stride, **settings)
    fns[name] = tf.function(lambda s, g=grid: patches.patch_grid(image, s, g))
    fns[name](tf.constant([0, 0])).numpy()  # Trace before timing.
  times = {name: [] for name in fns}
  for r in range(FLAGS.repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      for i in range(FLAGS.images):
        fn(tf.constant([i, r + 1])).numpy()
      times[name].append((time.perf_counter() - start) / FLAGS.images * 1e3)
  base = float(np.median(times[STEPS[0][0]]))
  print(f"| per-patch augmentation ({FLAGS.crop} px crop, {FLAGS.patch} px patches) "
        "| ms per image | ratio |\n|---|---|---|")
  for name in fns:
    ms = float(np.median(times[name]))
    print(f"| {name} | {ms:.1f} | {ms / base:.2f} |")


if __name__ == "__main__":
  app.run(main)
