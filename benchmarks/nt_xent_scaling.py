"""NT-Xent forward + backward time and memory as the global batch grows, 1 device vs N.

  # CPU, with 8 fake devices (XLA_FLAGS is set here if unset):
  python benchmarks/nt_xent_scaling.py --batches=256,512,1024,2048,4096,8192 --devices=1,8
  # GPU/TPU host with 8 accelerators:
  python benchmarks/nt_xent_scaling.py --batches=256,1024,4096,8192,16384 --devices=1,8

The loss is `losses.nt_xent` on [B, d] embeddings (d = --dim) of each view, differentiated with
respect to both. On 1 device it builds [B, 2B] logits per view; on N devices it runs under
`jax.shard_map`, each device holding B/N rows, gathering all 2B keys and building [B/N, 2B]
logits, as the SimCLR step does. Memory is XLA's temp allocation of the compiled program
(`compiled.memory_analysis().temp_size_in_bytes`, per device), i.e. what the loss adds on top
of its inputs. On CPU the N "devices" share the same cores, so the N-device time is the time of
N per-device programs run by the cores there are; it shows scaling of memory, not of speed.
Imports no TensorFlow.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _set_fake_devices(n: int) -> None:
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def measure(batch: int, num_devices: int, dim: int, repeats: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from contrastive_jax import parallel  # pylint: disable=g-import-not-at-top
  from contrastive_jax.losses.nt_xent import nt_xent  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh(num_devices)
  axis = parallel.DATA_AXIS if num_devices > 1 else None
  kernel = functools.partial(nt_xent, temperature=0.1, axis_name=axis)

  def loss(z1, z2):
    if axis is None:
      return kernel(z1, z2)[0]
    spec = P(axis)
    return jax.shard_map(lambda a, b: kernel(a, b)[0], mesh=mesh, in_specs=(spec, spec),
                         out_specs=P())(z1, z2)

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  rng = np.random.default_rng(0)
  sharding = NamedSharding(mesh, P(parallel.DATA_AXIS))
  z1, z2 = (jax.device_put(rng.standard_normal((batch, dim)).astype(np.float32), sharding)
            for _ in range(2))
  t0 = time.perf_counter()
  compiled = grad.lower(z1, z2).compile()
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
  jax.block_until_ready(compiled(z1, z2))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(z1, z2))
    times.append(time.perf_counter() - t0)
  logits_bytes = 2 * (batch // num_devices) * (2 * batch) * 4  # both views' [b, 2B] float32
  return {"batch": batch, "devices": num_devices, "dim": dim,
          "device_kind": jax.devices()[0].device_kind, "time_s": statistics.median(times),
          "compile_s": compile_s, "temp_bytes_per_device": temp,
          "logits_bytes_per_device": logits_bytes}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="256,512,1024,2048,4096")
  p.add_argument("--devices", default="1,8")
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default="")
  args = p.parse_args()
  device_counts = [int(d) for d in args.devices.split(",")]
  _set_fake_devices(max(device_counts))
  import contrastive_jax  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import jax  # pylint: disable=g-import-not-at-top
  if jax.device_count() < max(device_counts):
    raise SystemExit(f"Only {jax.device_count()} devices; lower --devices.")
  print(f"JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"d={args.dim}, median of {args.repeats}", flush=True)
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    for n in device_counts:
      r = measure(batch, n, args.dim, args.repeats)
      rows.append(r)
      print(json.dumps(r), flush=True)
      if args.json:
        with open(args.json, "a") as f:
          f.write(json.dumps(r) + "\n")
  mib = lambda b: "-" if b is None else f"{b / 2**20:,.1f}"  # noqa: E731
  print("\n| global batch | devices | fwd+bwd (ms) | temp MiB / device | logits MiB / device |")
  print("|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['batch']:,} | {r['devices']} | {1e3 * r['time_s']:,.1f} | "
          f"{mib(r['temp_bytes_per_device'])} | {mib(r['logits_bytes_per_device'])} |")


if __name__ == "__main__":
  main()
