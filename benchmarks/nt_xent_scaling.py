"""NT-Xent forward + backward time and memory as the global batch grows, 1 device vs N.

  # CPU, with 8 fake devices (XLA_FLAGS is set here if unset):
  python benchmarks/nt_xent_scaling.py --batches=256,512,1024,2048,4096,8192,16384 \
      --devices=1,8 --kernels=fused,autodiff --max_host_gib=12
  # GPU/TPU host with 8 accelerators:
  python benchmarks/nt_xent_scaling.py --batches=256,1024,4096,8192,16384,32768 \
      --devices=1,8 --kernels=fused,autodiff

The loss is NT-Xent on [B, d] embeddings (d = --dim) of each view, differentiated with respect
to both, in two implementations: `fused` is `losses.nt_xent` (a custom VJP that recomputes
similarities block by block in the backward pass) and `autodiff` is `_nt_xent_autodiff` (the
plain formulation, differentiated by JAX). On 1 device the loss scores all 2B anchors against
2B keys; on N devices it runs under `jax.shard_map`, each device holding B/N rows, gathering all
2B keys and scoring its 2B/N anchors, as the SimCLR step does. Memory is XLA's temp allocation of
the compiled program (`compiled.memory_analysis().temp_size_in_bytes`, per device), i.e. what the
loss adds on top of its inputs. On CPU the N "devices" share the same cores (and the host's
memory), so the N-device time is the time of N per-device programs run by the cores there are;
it shows scaling of memory, not of speed. Imports no TensorFlow.
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


# Kernel name -> attribute of contrastive_jax.losses.nt_xent.
KERNELS = {"fused": "nt_xent", "autodiff": "_nt_xent_autodiff"}


def measure(batch: int, num_devices: int, dim: int, repeats: int, kernel: str = "fused",
            max_host_bytes: int | None = None) -> dict:
  """Compiles and times one kernel's forward + backward at one global batch and device count.

  A program whose temp allocation over all `num_devices` would exceed `max_host_bytes` is
  compiled but not run (`time_s` is None): on CPU the fake devices share the host's memory.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding  # pylint: disable=g-import-not-at-top
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top

  from contrastive_jax import parallel  # pylint: disable=g-import-not-at-top
  from contrastive_jax.losses import nt_xent  # pylint: disable=g-import-not-at-top

  if kernel not in KERNELS:
    raise ValueError(f"Unknown NT-Xent kernel {kernel!r}; valid: {sorted(KERNELS)}.")
  mesh = parallel.make_mesh(num_devices)
  axis = parallel.DATA_AXIS if num_devices > 1 else None
  fn = functools.partial(getattr(nt_xent, KERNELS[kernel]), temperature=0.1, axis_name=axis)

  def loss(z1, z2):
    if axis is None:
      return fn(z1, z2)[0]
    spec = P(axis)
    return jax.shard_map(lambda a, b: fn(a, b)[0], mesh=mesh, in_specs=(spec, spec),
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
  time_s = None
  if max_host_bytes is None or temp is None or temp * num_devices <= max_host_bytes:
    jax.block_until_ready(compiled(z1, z2))
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(z1, z2))
      times.append(time.perf_counter() - t0)
    time_s = statistics.median(times)
  logits_bytes = 2 * (batch // num_devices) * (2 * batch) * 4  # both views' [b, 2B] float32
  return {"benchmark": "nt_xent", "batch": batch, "devices": num_devices, "dim": dim,
          "kernel": kernel, "device": jax.devices()[0].device_kind, "time_s": time_s,
          "compile_s": compile_s, "temp_bytes_per_device": temp,
          "logits_bytes_per_device": logits_bytes}


def _table(rows: list[dict], kernels: list[str]) -> str:
  """One line per (batch, devices), the kernels side by side."""
  mib = lambda b: "-" if b is None else f"{b / 2**20:,.1f}"  # noqa: E731
  ms = lambda t: "not run" if t is None else f"{1e3 * t:,.1f}"  # noqa: E731
  ratio = "fused" in kernels and "autodiff" in kernels
  head = (["global batch", "devices", "logits MiB / device"] +
          [f"{k} fwd+bwd (ms)" for k in kernels] + [f"{k} temp MiB / device" for k in kernels] +
          (["autodiff / fused temp"] if ratio else []))
  lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
  by_key = {(r["batch"], r["devices"], r["kernel"]): r for r in rows}
  for batch, devices in dict.fromkeys((r["batch"], r["devices"]) for r in rows):
    got = [by_key[(batch, devices, k)] for k in kernels]
    cells = ([f"{batch:,}", str(devices), mib(got[0]["logits_bytes_per_device"])] +
             [ms(r["time_s"]) for r in got] + [mib(r["temp_bytes_per_device"]) for r in got])
    if ratio:
      temps = {k: by_key[(batch, devices, k)]["temp_bytes_per_device"] for k in kernels}
      cells.append("-" if None in temps.values() else f"{temps['autodiff'] / temps['fused']:.1f}x")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batches", default="256,512,1024,2048,4096")
  p.add_argument("--devices", default="1,8")
  p.add_argument("--kernels", default="fused,autodiff",
                 help=f"comma-separated, from {sorted(KERNELS)}")
  p.add_argument("--dim", type=int, default=128)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--max_host_gib", type=float, default=0.0,
                 help="compile but do not run programs whose temp over all devices exceeds "
                      "this (the fake CPU devices share host memory); 0 runs everything")
  p.add_argument("--json", default="")
  args = p.parse_args()
  device_counts = [int(d) for d in args.devices.split(",")]
  kernels = args.kernels.split(",")
  for k in kernels:
    if k not in KERNELS:
      raise SystemExit(f"Unknown --kernels entry {k!r}; valid: {sorted(KERNELS)}.")
  max_host_bytes = int(args.max_host_gib * 2**30) or None
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
      for k in kernels:
        r = measure(batch, n, args.dim, args.repeats, kernel=k, max_host_bytes=max_host_bytes)
        rows.append(r)
        print(json.dumps(r), flush=True)
        if args.json:
          with open(args.json, "a") as f:
            f.write(json.dumps(r) + "\n")
  print("\n" + _table(rows, kernels))


if __name__ == "__main__":
  main()
