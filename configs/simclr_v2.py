"""SimCLRv2's pretraining (Chen et al., 2020b, "Big Self-Supervised Models are Strong
Semi-Supervised Learners", section 2): SimCLR with a deeper projection head, fine-tuned from the
head's first layer, on wider and deeper ResNets.

  python -m contrastive_jax.main --config=configs/simclr_v2.py            # offline, digits
  python -m contrastive_jax.main --config=configs/simclr_v2.py:imagenet2012 --workdir=gs://...

Presets: configs/simclr.py's (digits, tiny, cifar10, cifar10_folder, cifar100, stl10,
imagenet2012), with three changes the paper makes:
  * a 3-layer projection head: two hidden layers as wide as the encoder's output, then the
    128-d output (`simclr.proj_dims`);
  * fine-tuning starts from the head's first layer, which the paper finds better than from
    the encoder's output: `python -m contrastive_jax.evaluate --workdir=<run>
    --eval_config.evals.finetune.from_head_layer=1` (the encoder and that layer are copied);
  * for ImageNet, a ResNet-152 at 3x width (the paper's largest, without selective kernels,
    which this codebase does not implement) and 800 epochs.
The distillation that follows is configs/distill.py.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/simclr_v2.py; valid: {PRESETS}.")
  c = presets.sibling_config(__file__, "simclr.py", preset)
  if preset == "imagenet2012":
    c.model.update(depth=152, width=3.0)
    c.num_epochs = 800
  # The encoder's output width: 512 x width for basic blocks, 2048 x width for bottlenecks.
  base = 2048 if c.model.depth >= 50 else 512
  hidden = max(1, int(round(base * c.model.width)))
  c.simclr.proj_dims = (hidden, hidden, c.simclr.proj_dims[-1])
  return c
