"""The run's own classifier on the evaluation split: a "classifier" block.

A classifier run (a `supervised` run on a labelled subset, fine-tuned from a pretrained encoder
with `init_from`; a `distill` student; a Noisy Student iteration) is scored as it stands: its
logits, in inference mode, over the evaluation split, top-1 and top-5. Its row says how many
labels the classifier was trained with, so a teacher, its distilled students and the other
protocols' rows line up by label fraction in one table and one low-data curve
(`python -m contrastive_jax.evaluate --workdir=<teacher>,<student>,...`):

  * `config.data.train_subset` (the supervised run's labelled subset);
  * for FixMatch, MixMatch and pseudo-label, their labelled stream's subset (`config.semi`);
  * for a `distill` run, its teacher's labels (read from the teacher's work directory,
    recursively), or its own labelled term (`distill.label_fraction`) when alpha < 1;
  * otherwise the whole labelled split.

Runs of methods without a classifier (SimCLR, CPC v2, ...) give no row, so the default eval
config may list the block for every run. No TensorFlow here.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from contrastive_jax import runs
from contrastive_jax import step as step_lib
from contrastive_jax.data import subsets, train_subset
from contrastive_jax.evaluators import common, metrics


def _subset_name(kw: dict[str, Any]) -> str:
  name, value = next(iter(kw.items()))
  return f"{name}={value:g}" if name == "fraction" else f"{name}={value}"


def _subset_of(config: ml_collections.ConfigDict) -> tuple[str, dict[str, Any]] | None:
  """(subset name, labelled_subset kwargs + seed) of the labels a classifier run trained on,
  or None for every label of the split."""
  s = train_subset.block(config)
  if s is not None:
    kw = train_subset.kwargs(s)
    return _subset_name(kw), {**kw, "seed": s.seed}
  if config.get("semi") is not None:  # FixMatch, MixMatch, pseudo-label: their labelled stream.
    sm = config.semi
    kw = train_subset.subset_kwargs(sm.index_file, sm.per_class, sm.label_fraction)
    return _subset_name(kw), {**kw, "seed": sm.subset_seed}
  if config.get("method") == "distill":
    d = config.distill
    if d.alpha < 1:
      kw = train_subset.subset_kwargs(d.index_file, d.per_class, d.label_fraction)
      return _subset_name(kw), {**kw, "seed": d.subset_seed}
    try:
      teacher = runs.load_config(d.teacher.workdir)
    except (OSError, ValueError) as e:
      logging.warning("The teacher's config (%s) is unreadable (%s); the classifier row counts "
                      "every label.", d.teacher.workdir, e)
      return None
    return _subset_of(teacher)
  return None


class ClassifierAccuracy(common.Evaluator):
  """Top-1 / top-5 of the run's classifier (the common block keys only)."""

  @functools.cached_property
  def _logits_fn(self):
    method, defs = self.subject.method, self.subject.defs

    @jax.jit
    def logits(state, images):
      return method.logits(step_lib.eval_model(method, defs, state), images).astype(np.float32)

    return logits

  def labelled(self) -> dict[str, Any]:
    """The row's subset: name, label fraction and the indices of the labels used."""
    labels = self.data.labels(self.subject.labelled_split)
    found = _subset_of(self.subject.config)
    if found is None:
      return {"subset": "fraction=1", "label_fraction": 1.0,
              "indices": np.flatnonzero(labels >= 0)}
    name, kw = found
    seed = int(kw.pop("seed"))
    names = self.subject.example_names(len(labels)) if "index_file" in kw else None
    idx = subsets.labelled_subset(labels, seed=seed, names=names, **kw)
    idx = idx[labels[idx] >= 0]
    fraction = kw.get("fraction") or len(idx) / max(1, int(np.sum(labels >= 0)))
    return {"subset": name, "label_fraction": float(fraction), "indices": idx}

  def run(self, state: Any, step: int) -> list[common.Row]:
    if not hasattr(self.subject.method, "logits"):
      logging.info("evals.%s: a %r run has no classifier; no row.", self.name,
                   self.subject.config.method)
      return []
    out = self.test_features(state, self._logits_fn)
    result = metrics.sharded_topk(out.x, out.labels, out.index >= 0)
    return [self.row("classifier", self.labelled(), self.subject.config.seed, step, result)]
