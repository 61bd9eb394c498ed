"""Throughput of the host input pipeline (SimCLR two views) on CIFAR-10 as an image folder.

  python benchmarks/augment_throughput.py                       # unpacks to /tmp/cifar10 if needed
  python benchmarks/augment_throughput.py --batches=100 --kinds=two_views,eval --cache=on

Counts source images per second (a two-view example is one image, two views) after a warm-up
that fills the cache and tf.data's autotuned buffers, for each (input kind, cache) pair.
"""
from __future__ import annotations

import argparse
import os
import tarfile
import time

import ml_collections


def _ensure_folder(path: str, tarball: str) -> None:
  if os.path.isdir(os.path.join(path, "train")):
    return
  print(f"Unpacking {tarball} into {path} ...", flush=True)
  os.makedirs(path, exist_ok=True)
  with tarfile.open(tarball) as tar:
    tar.extractall(path, filter="data")


def _config(path: str, batch_size: int, cache: bool, image_size: int) -> ml_collections.ConfigDict:
  from contrastive_jax import presets  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.data = presets.data_config("cifar10_folder")
  c.data.update(path=path, cache=cache, image_size=image_size)
  c.augment = presets.augment_config("cifar10_folder")
  c.batch_size, c.seed = batch_size, 0
  return c


def measure(config: ml_collections.ConfigDict, kind: str, warmup: int,
            batches: int) -> tuple[float, float]:
  """(images per second, first-batch latency in s) after `warmup` batches."""
  from contrastive_jax import data  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  it = data.build_train_iterator(config, kind, process_index=0, process_count=1)
  next(it)
  first = time.perf_counter() - t0
  for _ in range(warmup):
    next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - t0), first


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--path", default="/tmp/cifar10")
  p.add_argument("--tarball", default=os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "..", "shared", "data", "cifar10-jpeg.tar.gz"))
  p.add_argument("--batch_size", type=int, default=256)
  p.add_argument("--image_size", type=int, default=32)
  # Warm-up must cover one epoch (196 batches of 256) when the cache is on, to time reads from
  # memory rather than the first, decoding pass.
  p.add_argument("--warmup", type=int, default=200)
  p.add_argument("--batches", type=int, default=100)
  p.add_argument("--kinds", default="two_views,single_view,eval")
  p.add_argument("--cache", default="on,off", help="comma list of on/off")
  args = p.parse_args()
  _ensure_folder(args.path, args.tarball)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, batch {args.batch_size}, image {args.image_size}px, "
        f"{args.warmup} warm-up + {args.batches} timed batches")
  rows = []
  for kind in args.kinds.split(","):
    for cache in args.cache.split(","):
      config = _config(args.path, args.batch_size, cache == "on", args.image_size)
      warmup = args.warmup if cache == "on" else min(args.warmup, 20)
      ips, first = measure(config, kind, warmup, args.batches)
      rows.append((kind, cache, ips, first))
      print(f"  {kind:12s} cache={cache:3s} {ips:8.0f} images/s", flush=True)
  print("\n| transform | cache | images/s | views/s | first batch (s) |")
  print("|---|---|---:|---:|---:|")
  for kind, cache, ips, first in rows:
    views = 2 * ips if kind == "two_views" else ips
    print(f"| {kind} | {cache} | {ips:,.0f} | {views:,.0f} | {first:.1f} |")
  print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
