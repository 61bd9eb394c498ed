"""The experiments' shared reading of classifier runs: every `<name>-<tag><value>-<seed>` work
directory under a parent, its "classifier" evaluator's top-1, and mean and standard deviation
over seeds (experiments/distillation.py, experiments/semi_supervised.py)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np


def seed_table(workdir: str, names: Sequence[str], parse: Callable[[str], object],
               key: str) -> list[dict]:
  """Rows {"run", key, "seeds", "top1", "mean", "std"} (top-1 in %), one per (value, name)
  found, values ascending and names in the order of `names`. A directory's middle part (its
  tag and value, e.g. "f0.01" or "n250") gives the value through `parse`."""
  found: dict[tuple[str, object], dict[int, float]] = {}
  for entry in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, entry, "results.json")
    if not os.path.isfile(path):
      continue
    name, value, seed = entry.rsplit("-", 2)
    with open(path) as f:
      rows = json.load(f).get("evals", {}).get("classifier", [])
    if name in names and rows:
      found.setdefault((name, parse(value)), {})[int(seed)] = 100 * rows[0]["top1"]
  table = []
  for value in sorted({v for _, v in found}):
    for name in names:
      by_seed = found.get((name, value))
      if not by_seed:
        continue
      values = [by_seed[s] for s in sorted(by_seed)]
      table.append({"run": name, key: value, "seeds": sorted(by_seed), "top1": values,
                    "mean": float(np.mean(values)), "std": float(np.std(values))})
  return table
