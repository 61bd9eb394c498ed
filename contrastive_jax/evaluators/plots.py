"""Figures of the evaluation suite (matplotlib, Agg backend) and logged-scalar reading.

The low-data curve is accuracy against the fraction of labels (log x) for the supervised
baseline, linear evaluation and fine-tuning, as in figure 1 of the CPC v2 paper. The learning
dynamics figure is accuracy (kNN, linear) and training loss against pretraining steps, read
from the run's TensorBoard event files (what clu writes) or a metrics.jsonl, plus the suite's
own per-checkpoint results. Reading event files may import TensorBoard/TensorFlow: this module
is not compute core, and the suite imports it only when it draws.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tensorboard.backend.event_processing import event_file_loader  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

from contrastive_jax import storage  # noqa: E402

_STYLE = {  # protocol -> (label, colour, marker)
    "supervised": ("Supervised baseline (from scratch)", "tab:gray", "s"),
    "linear": ("Linear evaluation (frozen)", "tab:blue", "o"),
    "finetune": ("Fine-tuned", "tab:red", "^"),
    "knn": ("kNN (all labels)", "tab:green", "D"),
    "classifier": ("The run's classifier", "tab:purple", "*"),
    "grid_classifier": ("ResNet on the patch-feature grid (frozen)", "tab:orange", "v"),
    "grid_classifier_finetune": ("ResNet on the patch-feature grid (fine-tuned)", "tab:brown",
                                 "P"),
}


def _main(r: dict[str, Any]) -> bool:
  """Rows of the evaluated encoder, and the from-scratch baseline (not reference encoders)."""
  return r.get("encoder", "pretrained") == "pretrained" or r["protocol"] == "supervised"


def _mean_std(values: list[float]) -> tuple[float, float]:
  return float(np.mean(values)), float(np.std(values))


def low_data_curve(rows: list[dict[str, Any]], path: str, *, method: str = "") -> str:
  """Top-1 accuracy vs label fraction; each run's latest checkpoint plus the baseline. Rows
  of several runs (a "run" key, `suite.run_suites`) give one series per run and protocol."""
  fig, ax = plt.subplots(figsize=(6, 4.5))
  fractions = set()
  run_names = list(dict.fromkeys(r.get("run", "") for r in rows))
  latest_of = {}
  for run in run_names:
    latest_of[run] = max((r["step"] for r in rows if r.get("run", "") == run
                          and r["protocol"] != "supervised"), default=0)
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  series = 0
  for run in run_names:
    for protocol, (label, colour, marker) in _STYLE.items():
      step = 0 if protocol == "supervised" else latest_of[run]
      by_fraction = defaultdict(list)
      for r in rows:
        if (r.get("run", "") == run and r["protocol"] == protocol and r["step"] == step
            and _main(r)):
          by_fraction[r["label_fraction"]].append(100 * r["top1"])
      if not by_fraction:
        continue
      if len(run_names) > 1:  # One colour per series; the marker still tells the protocol.
        label, colour = f"{run}: {label}", colours[series % len(colours)]
      series += 1
      xs = sorted(by_fraction)
      fractions.update(xs)
      stats = [_mean_std(by_fraction[x]) for x in xs]
      ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], label=label,
                  color=colour, marker=marker, capsize=3,
                  linestyle="none" if len(xs) == 1 else "-")
  ax.set_xscale("log")
  if fractions:
    ticks = sorted(fractions)
    ax.set_xticks(ticks, [f"{100 * t:g}%" for t in ticks])
    ax.minorticks_off()
  ax.set_xlabel("Fraction of labelled training examples (log scale)")
  ax.set_ylabel("Top-1 accuracy (%)")
  if len(run_names) > 1:
    ax.set_title(f"Low-data curve: {len(run_names)} runs, each at its last checkpoint")
  else:
    latest = latest_of[run_names[0]] if run_names else 0
    ax.set_title(f"Low-data curve: {method} (checkpoint step {latest})" if method else
                 "Low-data curve")
  ax.grid(True, alpha=0.3)
  if series:
    ax.legend(loc="lower right", fontsize=8)
  fig.tight_layout()
  _save(fig, path)
  return path


def _save(fig, path: str) -> None:
  """Saves `fig` as PNG to `path`, local or in a bucket."""
  out = io.BytesIO()
  fig.savefig(out, dpi=120, format="png")
  plt.close(fig)
  storage.write_bytes(path, out.getvalue())


def _events(path) -> list[Any]:
  """The events of one event file; a bucket's is copied to a local file first, since
  TensorBoard's reader reaches buckets only through TensorFlow's filesystem."""
  if not storage.is_remote(path):
    return list(event_file_loader.EventFileLoader(os.fspath(path)).Load())
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, path.name)
    with open(local, "wb") as f:
      f.write(path.read_bytes())
    return list(event_file_loader.EventFileLoader(local).Load())


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
  """tag -> [(step, value)] from metrics.jsonl lines ({"step": N, tag: value, ...}) if the
  run wrote one, else from the TensorBoard event files in `workdir` (not its subfolders)."""
  out: dict[str, list[tuple[int, float]]] = defaultdict(list)
  jsonl = storage.path(workdir) / "metrics.jsonl"
  if jsonl.is_file():
    for line in jsonl.read_text().splitlines():
      if line.strip():
        rec = json.loads(line)
        for k, v in rec.items():
          if k != "step" and isinstance(v, (int, float)):
            out[k].append((int(rec["step"]), float(v)))
    return dict(out)
  files = sorted(storage.path(workdir).glob("events.out.tfevents.*"))
  if not files:
    return {}
  for path in files:
    for event in _events(path):
      for v in event.summary.value:
        if v.HasField("simple_value"):
          value = v.simple_value
        elif v.HasField("tensor"):
          arr = tensor_util.make_ndarray(v.tensor)
          if arr.size != 1 or not np.issubdtype(arr.dtype, np.number):
            continue
          value = float(arr.reshape(()))
        else:
          continue
        out[v.tag].append((int(event.step), float(value)))
  return {k: sorted(v) for k, v in out.items()}


def _finish(ax, plotted: bool, empty: str, ylabel: str, title: str) -> None:
  if not plotted:
    ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
  ax.set_xlabel("Pretraining step")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)


def learning_dynamics(workdir: str, rows: list[dict[str, Any]], path: str) -> str:
  """Accuracy (logged kNN/probe scalars and the suite's per-checkpoint kNN and linear rows at
  100% labels) and training loss against pretraining steps."""
  scalars = read_scalars(workdir)
  fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
  plotted = False
  logged = [t for t in sorted(scalars)
            if t.startswith("eval/") and t.endswith("/top1") and "random_init" not in t]
  for tag, colour in zip(logged, ("tab:orange", "tab:brown", "tab:pink", "tab:olive") * 4):
    steps, values = zip(*scalars[tag])
    acc_ax.plot(steps, 100 * np.asarray(values), marker=".", color=colour,
                label=f"logged {tag}")
    plotted = True
  for protocol in ("knn", "linear"):
    pts = defaultdict(list)
    for r in rows:
      if (r["protocol"] == protocol and r["label_fraction"] == 1.0 and r["step"] > 0
          and _main(r)):
        pts[r["step"]].append(100 * r["top1"])
    if pts:
      steps = sorted(pts)
      label, colour, marker = _STYLE[protocol]
      acc_ax.plot(steps, [np.mean(pts[s]) for s in steps], marker=marker, color=colour,
                  linestyle="--", label=f"{label.split(' (')[0]}, evaluated checkpoints")
      plotted = True
  _finish(acc_ax, plotted, "no accuracy logged", "Top-1 accuracy (%)",
          "Representation quality during pretraining")
  if plotted:
    acc_ax.legend(fontsize=8)
  loss = scalars.get("train/loss")
  if loss:
    steps, values = zip(*loss)
    loss_ax.plot(steps, values, color="tab:purple")
  _finish(loss_ax, bool(loss), "no train/loss logged", "Training loss", "Pretraining loss")
  fig.tight_layout()
  _save(fig, path)
  return path


def _pm(mean: float, std: float, spread: bool) -> str:
  return f"{mean:.1f}" + (f" ± {std:.1f}" if spread else "")


def format_table(rows: list[dict[str, Any]]) -> str:
  """Markdown table: mean (and std over seeds) of top-1/top-5 per protocol, subset and step."""
  groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
  for r in rows:
    protocol = r["protocol"] if _main(r) else f"{r['protocol']} ({r['encoder']})"
    if r.get("run"):
      protocol = f"{r['run']}: {protocol}"
    groups[(r["step"], protocol, r["label_fraction"], r["subset"])].append(r)
  order = {p: i for i, p in enumerate(("supervised", "linear", "finetune", "knn",
                                        "classifier"))}
  lines = ["| protocol | subset | labels | step | seeds | top-1 (%) | top-5 (%) |",
           "|---|---|---|---|---|---|---|"]
  def rank(k):
    protocol = k[1].split(": ", 1)[-1].split(" ")[0]
    return (k[1].split(": ", 1)[0] if ": " in k[1] else "", order.get(protocol, 9), k[1], k[0],
            k[2])

  for key in sorted(groups, key=rank):
    step, protocol, fraction, subset = key
    g = groups[key]
    t1, s1 = _mean_std([100 * r["top1"] for r in g])
    t5, s5 = _mean_std([100 * r["top5"] for r in g])
    spread = len(g) > 1
    lines.append(f"| {protocol} | {subset} | {g[0]['num_labelled']} ({100 * fraction:.3g}%) | "
                 f"{step} | {len(g)} | {_pm(t1, s1, spread)} | {_pm(t5, s5, spread)} |")
  return "\n".join(lines)
