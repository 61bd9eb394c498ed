"""Tables and target checks from the JSON lines the benchmarks append (`--json`).

  python benchmarks/summarize.py results/gpu-<time>/*.jsonl [--markdown=summary.md]

Reads rows of train_step.py, compare_steps.py, device_augment.py and nt_xent_scaling.py, prints
one markdown table per benchmark and checks the performance targets (BENCHMARKS.md):
  * SimCLR step, JAX images/s >= 1.25 x the PyTorch step's (torch.compile), same shapes;
  * SimCLR images/s >= 0.45 x this project's supervised step's images/s (0.5 is the two-view
    limit: a SimCLR image is two encoder passes); equivalently views/s >= 0.9 x supervised.
Ratios come from runs of one invocation on one machine; absolute figures name the device.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics

TARGET_VS_TORCH = 1.25
TARGET_VS_SUPERVISED = 0.45


def load(paths: list[str]) -> dict[str, list[dict]]:
  rows: dict[str, list[dict]] = collections.defaultdict(list)
  for path in paths:
    with open(path) as f:
      for line in f:
        line = line.strip()
        if line.startswith("{"):
          row = json.loads(line)
          rows[row.get("benchmark", "train_step")].append(row)
  return rows


def _shape(r: dict) -> tuple:
  return (r["model"], r["image_size"], r["dtype"])


def train_step_table(rows: list[dict]) -> tuple[list[str], dict]:
  out = ["| model | px | dtype | variant | batch | images/s | views/s | step (ms) | MFU | "
         "images/s vs supervised (limit 0.5) |",
         "|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
  ratios = {}
  by_shape = collections.defaultdict(dict)
  for r in rows:
    by_shape[_shape(r)][r["variant"]] = r
  for shape, variants in by_shape.items():
    sup = variants.get("supervised")
    for name in ("simclr", "simclr_device", "supervised"):
      r = variants.get(name)
      if r is None:
        continue
      rel = r["images_per_s"] / sup["images_per_s"] if sup else None
      if sup and name != "supervised":
        ratios[(*shape, name)] = rel
      mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
      out.append(f"| {shape[0]} | {shape[1]} | {shape[2]} | {name} | {r['batch_size']} | "
                 f"{r['images_per_s']:,.0f} | {r['views_per_s']:,.0f} | "
                 f"{1e3 * r['step_s']:.1f} | {mfu} | {'-' if rel is None else f'{rel:.2f}'} |")
  return out, ratios


def compare_table(rows: list[dict]) -> tuple[list[str], dict]:
  out = ["| model | px | dtype | batch | torch.compile | JAX step (ms) | PyTorch step (ms) | "
         "JAX images/s | PyTorch images/s | JAX / PyTorch images/s |",
         "|---|---:|---|---:|---|---:|---:|---:|---:|---:|"]
  groups = collections.defaultdict(lambda: {"jax": [], "torch": []})
  compiled = {}
  for r in rows:
    key = (*_shape(r), r["batch_size"])
    groups[key][r["framework"]].append(r["step_s"])
    if r["framework"] == "torch":
      compiled[key] = r.get("compile", False)
  ratios = {}
  for key, g in groups.items():
    if not g["jax"] or not g["torch"]:
      continue
    j, t = statistics.median(g["jax"]), statistics.median(g["torch"])
    ratios[key] = t / j
    b = key[3]
    out.append(f"| {key[0]} | {key[1]} | {key[2]} | {b} | {compiled.get(key, False)} | "
               f"{1e3 * j:.1f} | {1e3 * t:.1f} | {b / j:,.0f} | {b / t:,.0f} | "
               f"**{t / j:.2f}** |")
  return out, ratios


def augment_table(rows: list[dict]) -> list[str]:
  out = ["| recipe | raw -> crop | mode | batch | images/s | views/s | ms per batch |",
         "|---|---|---|---:|---:|---:|---:|"]
  for r in rows:
    out.append(f"| {r['recipe']} | {r['raw_size']} -> {r['size']} | {r['mode']} | "
               f"{r['batch_size']} | {r['images_per_s']:,.0f} | {r['views_per_s']:,.0f} | "
               f"{1e3 * r['step_s']:.2f} |")
  return out


def nt_xent_table(rows: list[dict]) -> list[str]:
  out = ["| kernel | global batch | devices | fwd+bwd (ms) | temp MiB / device |",
         "|---|---:|---:|---:|---:|"]
  for r in sorted(rows, key=lambda r: (r.get("kernel", ""), r["batch"], r["devices"])):
    ms = "not run" if r["time_s"] is None else f"{1e3 * r['time_s']:.2f}"
    out.append(f"| {r.get('kernel', '-')} | {r['batch']:,} | {r['devices']} | {ms} | "
               f"{r['temp_bytes_per_device'] / 2**20:.1f} |")
  return out


def summarize(rows: dict[str, list[dict]]) -> str:
  lines = []
  devices = sorted({r["device"] for rs in rows.values() for r in rs if "device" in r})
  lines.append(f"Devices: {', '.join(devices) or 'unknown'}\n")
  checks = []
  if rows.get("train_step"):
    table, vs_sup = train_step_table(rows["train_step"])
    lines += ["### Train step (JAX): SimCLR vs the supervised ceiling", "", *table, ""]
    for key, rel in vs_sup.items():
      if key[3] == "simclr":
        ok = "met" if rel >= TARGET_VS_SUPERVISED else "NOT met"
        checks.append(f"{key[0]} {key[1]} px {key[2]}: SimCLR images/s {rel:.3f} x supervised "
                      f"(target >= {TARGET_VS_SUPERVISED}, limit 0.5): {ok}")
  compare_rows = [r for r in rows.get("compare_steps", []) if "framework" in r]
  if compare_rows:
    table, vs_torch = compare_table(compare_rows)
    lines += ["### Same SimCLR step, JAX vs PyTorch (alternating fresh processes)", "",
              *table, ""]
    for key, ratio in vs_torch.items():
      ok = "met" if ratio >= TARGET_VS_TORCH else "NOT met"
      checks.append(f"{key[0]} {key[1]} px {key[2]} batch {key[3]}: JAX {ratio:.2f} x "
                    f"PyTorch images/s (target >= {TARGET_VS_TORCH}): {ok}")
  if rows.get("device_augment"):
    lines += ["### On-device augmentation", "", *augment_table(rows["device_augment"]), ""]
  if rows.get("nt_xent"):
    lines += ["### NT-Xent forward + backward", "", *nt_xent_table(rows["nt_xent"]), ""]
  if checks:
    lines += ["### Targets", "", *[f"- {c}" for c in checks], ""]
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("paths", nargs="+")
  p.add_argument("--markdown", default="", help="also write the summary to this file")
  args = p.parse_args()
  text = summarize(load(args.paths))
  print(text)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
