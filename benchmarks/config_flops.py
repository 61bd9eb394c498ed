"""FLOPs of any config's training step and of its whole run, from XLA's cost analysis.

  python benchmarks/config_flops.py --config=configs/cpc_v2.py:cifar10_folder \\
      --config.data.path=/tmp/cifar10 --tflops=100,30

Builds the config's own train step (`step.make_train_step`: the method's loss, optimiser and
on-device augmentation) at the config's batch on one batch of its own input pipeline, compiles
it for this machine (nothing runs, so a CPU can do it for a GPU-sized batch) and reads
`compile().cost_analysis()["flops"]` (one device's program). FLOPs are not linear in the
batch for contrastive losses (every patch or view scores every other), so the step is compiled
at the batch the run uses, not scaled from a smaller one. With --tflops, the run's time at
each sustained throughput (TFLOP/s per device, summed over devices): an estimate from FLOPs,
not a measurement, and only if the input pipeline keeps up. The dataset is read for one batch
(without its cache).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contrastive_jax import config_files  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
config_files.define_config_flag("config", None, "Experiment config, as for contrastive_jax.main.")
flags.DEFINE_string("tflops", "", "Comma-separated sustained TFLOP/s to turn FLOPs into time.")
flags.mark_flags_as_required(["config"])


def step_flops(config) -> tuple[float, int]:
  """XLA's FLOP count of one compiled train step of `config` (one device's program), and the
  run's number of steps."""
  # pylint: disable=g-import-not-at-top
  from benchmarks.train_step import compiled_flops
  from contrastive_jax import data, parallel, train
  from contrastive_jax import step as step_lib
  # pylint: enable=g-import-not-at-top
  p = train.plan(config)
  defs = step_lib.model_defs(p.method, config.seed)
  state = step_lib.make_init_fn(p.method, p.tx, p.mesh)(config.seed)
  train_step = step_lib.make_train_step(p.method, defs, p.tx, p.schedule, p.mesh,
                                        total_steps=p.total_steps)
  batch = parallel.shard_batch(next(data.build_train_iterator(config, p.spec)), p.mesh)
  return compiled_flops(train_step.lower(state, batch).compile()), p.total_steps


def main(argv):
  del argv
  config = FLAGS.config
  config.data.cache = False  # One batch: no need to read (and cache) the whole split first.
  config.data.shuffle_buffer = int(config.batch_size)
  per_step, steps = step_flops(config)
  if per_step <= 0:
    raise SystemExit("This backend's compiler reports no FLOP count; run on a CPU or GPU host.")
  out = {"batch": int(config.batch_size), "steps": steps,
         "gflop_per_image": per_step / config.batch_size / 1e9,
         "tflop_per_step": per_step / 1e12, "run_pflop": per_step * steps / 1e15}
  for t in filter(None, FLAGS.tflops.split(",")):
    out[f"hours_at_{t.strip()}_tflops"] = per_step * steps / (float(t) * 1e12) / 3600
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  app.run(main)
