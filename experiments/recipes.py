"""Settings the CPU-scale experiments share (docs/suncet_experiment.md's SimCLR recipe)."""
from __future__ import annotations

import ml_collections


def simclr_cpu(c: ml_collections.ConfigDict, steps: int) -> None:
  """SimCLR's short-run recipe on `c`: projection 256-64, temperature 0.2, LARS at 1.0 x B/256
  with weight decay 1e-6, warmup over a tenth of the `steps`."""
  c.simclr.update(proj_dims=(256, 64), temperature=0.2)
  c.optim.update(name="lars", base_lr=1.0, lr_scaling="linear", weight_decay=1e-6,
                 warmup_steps=max(1, steps // 10))
