"""JAX against PyTorch, same SimCLR step, same machine, back to back: the median ratio.

  # CPU (small scale; the machine's other load makes single runs noisy, hence repeats):
  python benchmarks/compare_steps.py --torch_python=/tmp/torchvenv/bin/python \\
      --model=resnet18 --image_size=32 --batch_size=32 --dtype=float32 --rounds=3
  # GPU (one device):
  python benchmarks/compare_steps.py --torch_python=/path/to/torch/venv/bin/python \\
      --model=resnet50 --image_size=224 --batch_size=256 --dtype=bfloat16 --torch_compile \\
      --steps=20 --rounds=3

Each round runs benchmarks/train_step.py (variant "simclr": the step alone on device-resident
views) and benchmarks/torch_simclr_step.py in fresh processes, alternating which goes first,
so slow phases of a shared machine hit both. Reports every round, the medians of the per-round
medians, and torch step time / JAX step time (> 1: JAX is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _last_json(out: str) -> dict:
  for line in reversed(out.splitlines()):
    if line.startswith("{"):
      return json.loads(line)
  raise RuntimeError(f"No JSON result in output:\n{out[-2000:]}")


def _run(cmd: list[str]) -> dict:
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
  return _last_json(proc.stdout)


def _append(path: str, row: dict) -> None:
  if path:
    with open(path, "a") as f:
      f.write(json.dumps(row) + "\n")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--torch_python", default="/tmp/torchvenv/bin/python")
  p.add_argument("--jax_python", default=sys.executable)
  p.add_argument("--model", default="resnet18")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--dtype", default="float32")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--torch_compile", action="store_true")
  p.add_argument("--torch_optimizer", default="lars")
  p.add_argument("--peak_tflops", default="0", help="passed to train_step.py (number or auto)")
  p.add_argument("--json", default="", help="append every run and the summary to this file")
  args = p.parse_args()
  common = [f"--model={args.model}", f"--image_size={args.image_size}",
            f"--batch_size={args.batch_size}", f"--dtype={args.dtype}", f"--steps={args.steps}",
            f"--repeats={args.repeats}", f"--warmup={args.warmup}"]
  jax_cmd = [args.jax_python, os.path.join(HERE, "train_step.py"), "--variants=simclr",
             f"--peak_tflops={args.peak_tflops}", *common]
  torch_cmd = [args.torch_python, os.path.join(HERE, "torch_simclr_step.py"), *common,
               f"--optimizer={args.torch_optimizer}"] + (["--compile"] if args.torch_compile
                                                         else [])
  results = {"jax": [], "torch": []}
  for r in range(args.rounds):
    order = ("jax", "torch") if r % 2 == 0 else ("torch", "jax")
    for name in order:
      out = {**_run(jax_cmd if name == "jax" else torch_cmd), "benchmark": "compare_steps",
             "round": r}
      results[name].append(out)
      _append(args.json, out)
      print(f"round {r} {name:5s} step {1e3 * out['step_s']:9.1f} ms  "
            f"({', '.join(f'{1e3 * t:.0f}' for t in out['step_s_all'])})  "
            f"{out['images_per_s']:,.1f} images/s on {out['device']}", flush=True)
  med = {k: statistics.median(o["step_s"] for o in v) for k, v in results.items()}
  b = args.batch_size
  print(f"\n{args.model} {args.image_size}px batch {b} {args.dtype}, {args.rounds} rounds")
  print("| framework | median step (ms) | images/s | views/s |")
  print("|---|---:|---:|---:|")
  for k in ("jax", "torch"):
    print(f"| {k} | {1e3 * med[k]:.1f} | {b / med[k]:,.1f} | {2 * b / med[k]:,.1f} |")
  print(f"ratio torch/jax step time: {med['torch'] / med['jax']:.2f} (> 1: JAX faster)")
  summary = {"benchmark": "compare_steps_summary", "model": args.model,
             "image_size": args.image_size, "batch_size": b, "dtype": args.dtype,
             "torch_compile": args.torch_compile, "device": results["jax"][0]["device"],
             "median_step_s": med, "ratio_torch_over_jax": med["torch"] / med["jax"]}
  _append(args.json, summary)
  print(json.dumps({**summary, "rounds": results}))


if __name__ == "__main__":
  main()
