"""Noisy Student (Xie et al., 2020): iterated self-training, one `distill` run per iteration.

Iteration k trains a student (config.model, widened or deepened by
`config.noisy_student.depths[k - 1]` / `widths[k - 1]` where set) on the labels of the previous
iteration's student, the first on those of `config.distill.teacher`. The noise is the distill
method's: views drawn with config.augment for the student while the teacher sees the clean
image (`distill.noise.augment`), dropout before the classifier (`distill.noise.dropout`); the
teacher's labels may be soft or hard, filtered by confidence and balanced over classes.

Each iteration is its own work directory, `<workdir>/iteration_<k>`, so a failed or preempted
iteration leaves the earlier ones intact: rerunning the command skips the iterations that
finished (their results.json) and resumes the one that did not from its last checkpoint.
"""
from __future__ import annotations

from typing import Any

import ml_collections
from absl import logging

from contrastive_jax import storage, train


def validate(config: ml_collections.ConfigDict) -> None:
  c = config.noisy_student
  if not (isinstance(c.iterations, int) and c.iterations >= 1):
    raise ValueError(f"config.noisy_student.iterations={c.iterations!r} is invalid: an "
                     "integer >= 1.")
  for key in ("depths", "widths"):
    if len(c[key]) not in (0, c.iterations):
      raise ValueError(f"config.noisy_student.{key}={tuple(c[key])!r} is invalid: empty (the "
                       f"student keeps config.model) or one value per iteration "
                       f"({c.iterations}).")
  if config.method != "distill":
    raise ValueError(f"config.noisy_student needs config.method='distill', got "
                     f"{config.method!r}.")


def iteration_configs(config: ml_collections.ConfigDict, workdir: str
                      ) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(work directory, config) of every iteration, each taught by the one before."""
  validate(config)
  c = config.noisy_student
  out = []
  teacher = dict(config.distill.teacher)
  for k in range(1, c.iterations + 1):
    cfg = ml_collections.ConfigDict(config.to_dict())
    if c.depths:
      cfg.model.depth = int(c.depths[k - 1])
    if c.widths:
      cfg.model.width = float(c.widths[k - 1])
    cfg.distill.teacher.update(teacher)
    directory = storage.join(workdir, f"iteration_{k}")
    out.append((directory, cfg))
    teacher = dict(workdir=directory, step=-1, arch=cfg.model.get("arch", "resnet"),
                   depth=cfg.model.depth, width=cfg.model.width,
                   stem=cfg.model.stem, norm=cfg.model.norm,
                   hidden_dims=tuple(cfg.supervised.hidden_dims))
  return out


def run_iterations(config: ml_collections.ConfigDict, workdir: str,
                   **kwargs: Any) -> dict[str, Any]:
  """Trains every iteration not finished yet; returns the last one's results (or the
  preempted one's, with `preempted`)."""
  results: dict[str, Any] = {}
  for k, (directory, cfg) in enumerate(iteration_configs(config, workdir), start=1):
    done = storage.path(directory) / "results.json"
    if done.exists():
      logging.info("Noisy Student iteration %d is finished (%s); skipping it.", k, directory)
      results = {**storage.read_json(done), "iteration": k}
      continue
    logging.info("Noisy Student iteration %d of %d: %s, taught by %s.", k,
                 config.noisy_student.iterations, directory, cfg.distill.teacher.workdir)
    results = train.train_and_evaluate(cfg, directory, **kwargs)
    results["iteration"] = k
    if results.get("preempted"):
      return results
  return results
