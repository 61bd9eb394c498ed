"""Method registry: name -> Method subclass. Unknown names fail with the list of valid ones."""
from __future__ import annotations

import ml_collections

from contrastive_jax.input_spec import DatasetInfo
from contrastive_jax.methods.base import Method
from contrastive_jax.methods.byol import BYOL
from contrastive_jax.methods.cpc_v2 import CPCv2
from contrastive_jax.methods.distill import Distill
from contrastive_jax.methods.moco import MoCoV2, MoCoV3
from contrastive_jax.methods.semi import FixMatch, MixMatch, PseudoLabel
from contrastive_jax.methods.simclr import SimCLR
from contrastive_jax.methods.suncet import SuNCEt
from contrastive_jax.methods.supervised import Supervised

METHODS: dict[str, type[Method]] = {
    SimCLR.name: SimCLR,
    CPCv2.name: CPCv2,
    SuNCEt.name: SuNCEt,
    Supervised.name: Supervised,
    MoCoV2.name: MoCoV2,
    MoCoV3.name: MoCoV3,
    BYOL.name: BYOL,
    Distill.name: Distill,
    PseudoLabel.name: PseudoLabel,
    MixMatch.name: MixMatch,
    FixMatch.name: FixMatch,
}


def get_method(config: ml_collections.ConfigDict,
               dataset: DatasetInfo | None = None) -> Method:
  """The method `config.method` names; `dataset` is the configured data's class count and
  sizes, for methods whose inputs or heads depend on them."""
  if config.method not in METHODS:
    raise ValueError(f"Unknown config.method {config.method!r}; valid: {sorted(METHODS)}.")
  return METHODS[config.method](config, dataset)
