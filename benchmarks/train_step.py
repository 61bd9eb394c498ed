"""Train-step throughput and MFU: SimCLR (two views), with and without on-device augmentation,
against this project's supervised step (cross-entropy on one view) as the ceiling.

  # CPU check of the script (small scale; XLA:CPU's bfloat16 convolutions are slow, so fp32):
  python benchmarks/train_step.py --model=resnet18 --image_size=32 --batch_size=32 --dtype=float32
  python benchmarks/train_step.py --model=resnet50 --image_size=64 --batch_size=8 --dtype=float32
  # GPU (peak = dense bf16 TFLOP/s of the part; auto knows H100/H200/A100 and TPUs):
  python benchmarks/train_step.py --model=resnet50 --image_size=224 --batch_size=256 \\
      --dtype=bfloat16 --peak_tflops=auto --steps=20 --repeats=5
  python benchmarks/train_step.py --model=resnet18 --image_size=32 --batch_size=1024 \\
      --dtype=bfloat16 --peak_tflops=auto --steps=20 --repeats=5
  # Every GPU benchmark at once: bash benchmarks/gpu_suite.sh

Every step runs the project's own jitted train step (`step.make_train_step`: LARS, global
BatchNorm, NT-Xent under shard_map) on synthetic batches that live on the devices already, so
input pipelines are out of the picture. Variants (`--variants`):
  simclr        {"view1", "view2"} float32, augmented elsewhere: the step alone;
  simclr_device {"image"} uint8 raw images, augmented inside the step (ops/augment.py);
  supervised    {"image", "label"}: encoder + linear classifier, cross-entropy on one view,
                at batch 2 x --batch_size, so its encoder sees as many images per step as
                SimCLR's (two views each).
Images/s counts source images; a SimCLR image is two encoder passes, so compare views/s with the
supervised step (views/s = images/s there) for the cost of the contrastive part.

FLOPs come from XLA's cost analysis of the compiled step (`compile().cost_analysis()`), the
per-device program, so MFU = flops / step time / `--peak_tflops` (per device). They include
what the step does besides the model (augmentation, optimizer), which is small.
Imports no TensorFlow.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import contrastive_jax  # noqa: E402,F401  (CPU compiler workaround before JAX starts)
import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from contrastive_jax import presets, optim, parallel  # noqa: E402
from contrastive_jax import step as step_lib  # noqa: E402
from contrastive_jax.methods import get_method  # noqa: E402

MODELS = {"resnet18": 18, "resnet50": 50}
# Dense bfloat16 peak TFLOP/s of one device, by the start of jax's device_kind, for
# --peak_tflops=auto (vendors' datasheets; without sparsity).
PEAK_BF16_TFLOPS = (("NVIDIA H200", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100", 989.0),
                    ("NVIDIA A100", 312.0), ("NVIDIA L4", 121.0), ("TPU v6", 918.0),
                    ("TPU v5p", 459.0), ("TPU v5", 197.0), ("TPU v4", 275.0))
VARIANTS = ("simclr", "simclr_device", "supervised")


def make_config(args: argparse.Namespace, variant: str) -> ml_collections.ConfigDict:
  c = presets.base_config()
  c.method = "supervised" if variant == "supervised" else "simclr"
  c.dtype = args.dtype
  c.batch_size = batch_size_of(args, variant)
  stem = args.stem if args.stem != "auto" else ("cifar" if args.image_size <= 64 else "imagenet")
  c.model = ml_collections.ConfigDict(dict(depth=MODELS[args.model], width=1.0, stem=stem,
                                           norm="batch", bn_momentum=0.9, bn_cross_replica=True))
  c.simclr = ml_collections.ConfigDict(dict(temperature=0.1, proj_dims=(2048, 128),
                                            proj_batch_norm=True))
  preset = "cifar10" if args.image_size <= 64 else "imagenet2012"
  c.data = presets.data_config(preset)
  c.data.image_size = args.image_size
  c.augment = presets.augment_config(preset)
  c.augment.on_device = variant == "simclr_device"
  # The supervised ceiling is the project's own supervised method, on host-augmented views.
  c.supervised = presets.supervised_block(num_classes=1000, zero_init=False)
  c.optim.update(name="lars", base_lr=0.3, weight_decay=1e-6)
  return c


def batch_size_of(args: argparse.Namespace, variant: str) -> int:
  return 2 * args.batch_size if variant == "supervised" else args.batch_size


def synthetic_batch(variant: str, batch_size: int, size: int, mesh) -> dict[str, jax.Array]:
  rng = np.random.default_rng(0)
  shape = (batch_size, size, size, 3)
  if variant == "simclr":
    batch = {"view1": rng.uniform(size=shape).astype(np.float32),
             "view2": rng.uniform(size=shape).astype(np.float32)}
  elif variant == "simclr_device":
    batch = {"image": rng.integers(0, 256, size=shape, dtype=np.uint8)}
  else:
    batch = {"image": rng.uniform(size=shape).astype(np.float32)}
  batch["label"] = rng.integers(0, 1000, size=batch_size).astype(np.int32)
  return parallel.shard_batch(batch, mesh)


def peak_tflops(value: str, dtype: str) -> float:
  """--peak_tflops: a number, or "auto" (bfloat16 only: the table above; 0 if unknown)."""
  if value != "auto":
    return float(value)
  kind = jax.devices()[0].device_kind
  if dtype != "bfloat16":
    return 0.0
  return next((peak for prefix, peak in PEAK_BF16_TFLOPS if kind.startswith(prefix)), 0.0)


def compiled_flops(compiled) -> float:
  """XLA's FLOP count of a compiled program (one device's); 0.0 where the backend gives none."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older JAX returns one dict per program.
    cost = cost[0]
  return float(cost.get("flops", 0.0)) if cost else 0.0


class Runner:
  """One variant's compiled step, state and batch; `time(steps)` runs and times steps."""

  def __init__(self, args: argparse.Namespace, variant: str):
    self.args, self.variant = args, variant
    config = make_config(args, variant)
    method = get_method(config)
    self.mesh = parallel.make_mesh()
    tx, schedule = optim.build_optimizer(config.optim, config.batch_size, 10_000)
    self.state = step_lib.create_train_state(method, tx, 0, self.mesh)
    step = step_lib.make_train_step(method, step_lib.model_defs(method), tx, schedule,
                                    self.mesh)
    self.batch_size = batch_size_of(args, variant)
    self.batch = synthetic_batch(variant, self.batch_size, args.image_size, self.mesh)
    t0 = time.perf_counter()
    self.compiled = step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - t0
    self.flops = compiled_flops(self.compiled)
    self.times: list[float] = []
    self.metrics = None

  def time(self, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
      self.state, self.metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready(self.metrics)
    return (time.perf_counter() - t0) / steps

  def result(self) -> dict:
    args, step_s = self.args, statistics.median(self.times)
    views = 1 if self.variant == "supervised" else 2
    out = {"benchmark": "train_step", "framework": "jax", "variant": self.variant,
           "model": args.model,
           "image_size": args.image_size, "batch_size": self.batch_size, "dtype": args.dtype,
           "device": jax.devices()[0].device_kind, "num_devices": self.mesh.devices.size,
           "step_s": step_s, "step_s_all": self.times,
           "images_per_s": self.batch_size / step_s,
           "views_per_s": views * self.batch_size / step_s, "compile_s": self.compile_s,
           "tflops_per_step_per_device": self.flops / 1e12,
           "achieved_tflops_per_device": self.flops / step_s / 1e12,
           "loss": float(self.metrics["loss"])}
    if args.peak_tflops:
      out["peak_tflops"] = args.peak_tflops
      out["mfu"] = out["achieved_tflops_per_device"] / args.peak_tflops
    return out


def run(args: argparse.Namespace, variants: list[str]) -> list[dict]:
  """Compiles every variant, warms each up, then times them round-robin (`--repeats` rounds
  of `--steps` steps each), so a slow phase of a shared machine hits every variant alike."""
  runners = [Runner(args, v) for v in variants]
  for r in runners:
    r.time(max(args.warmup, 1))
  for _ in range(args.repeats):
    for r in runners:
      r.times.append(r.time(args.steps))
  return [r.result() for r in runners]


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=sorted(MODELS), default="resnet18")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=32, help="global, over all devices")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
  p.add_argument("--stem", choices=("auto", "cifar", "imagenet"), default="auto",
                 help="auto: the 3x3 CIFAR stem up to 64 px, the ImageNet stem above")
  p.add_argument("--variants", default=",".join(VARIANTS))
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
  p.add_argument("--repeats", type=int, default=3,
                 help="timed rounds over the variants; the median is reported")
  p.add_argument("--peak_tflops", default="0",
                 help="peak TFLOP/s of one device in --dtype, for MFU (0: not reported; auto: "
                 "from the device kind, bfloat16 only)")
  p.add_argument("--json", default="", help="append one JSON line per variant to this file")
  args = p.parse_args()
  args.peak_tflops = peak_tflops(args.peak_tflops, args.dtype)
  variants = args.variants.split(",")
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    raise SystemExit(f"Unknown variants {sorted(unknown)}; valid: {VARIANTS}.")
  print(f"JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"{args.model} {args.image_size}px, global batch {args.batch_size}, {args.dtype}",
        flush=True)
  rows = run(args, variants)
  for r in rows:
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(r) + "\n")
    print(json.dumps(r), flush=True)
  ceiling = next((r for r in rows if r["variant"] == "supervised"), None)
  print("\n| variant | images/s | views/s | step (ms) | TFLOP/step/device | MFU | views/s vs "
        "supervised |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
    rel = f"{r['views_per_s'] / ceiling['views_per_s']:.2f}" if ceiling else "-"
    print(f"| {r['variant']} | {r['images_per_s']:,.1f} | {r['views_per_s']:,.1f} | "
          f"{1e3 * r['step_s']:.1f} | {r['tflops_per_step_per_device']:.3f} | {mfu} | {rel} |")


if __name__ == "__main__":
  main()
