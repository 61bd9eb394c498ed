"""Supervised training of the same encoders: a ResNet, a linear classifier, cross-entropy.

  python -m contrastive_jax.main --config=configs/supervised.py          # offline, digits
  python -m contrastive_jax.main --config=configs/supervised.py:cifar10  # TFDS CIFAR-10
  python -m contrastive_jax.main --config=configs/supervised.py:digits \\
      --config.init_from.workdir=runs/<simclr run>                       # fine-tune a run
  python -m contrastive_jax.main --config=configs/supervised.py:digits \
      --config.data.train_subset.fraction=0.1                            # on 10% of labels

The ceiling the label-efficient methods are compared against, and the method the fine-tuning
evaluators train. Augmentation is random resized crop + flip (the colour and blur
probabilities of `config.augment` are 0); `config.augment.on_device=True` moves it to the
accelerator. CIFAR: ResNet-50 with the 3x3 stem, SGD with momentum 0.9 and Nesterov-free
weight decay 5e-4, lr 0.1 x B/256, cosine, 200 epochs (a common supervised CIFAR recipe; the
SimCLR paper's appendix B.9 compares against a supervised ResNet-50 of this kind). ImageNet:
SGD, lr 0.1 x B/256, weight decay 1e-4, label smoothing 0.1, 5 warmup epochs, 90 epochs (Goyal
et al., 2017). Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100,
stl10, imagenet2012.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  c = presets.experiment("supervised", preset, PRESETS, depth=50, stem="cifar")
  c.supervised = presets.supervised_block()
  c.augment.update(color_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
  c.optim.update(name="sgd", base_lr=0.1, lr_scaling="linear", weight_decay=5e-4,
                 warmup_steps=0, momentum=0.9)
  c.batch_size = 256
  c.num_epochs = 200
  presets.run_length(c, preset)
  # The classifier's own accuracy is the result; a probe of its features would be a detour.
  c.evals.linear.at_end = False
  c.evals.classifier = presets.classifier_eval(at_end=True)

  if preset in ("digits", "tiny"):
    c.data.image_size = 16
    c.model.update(depth=18, width=0.25)
    c.batch_size = 128
    c.num_epochs = 30
    c.optim.update(base_lr=0.4, warmup_steps=20)
    c.checkpoint_every_steps = 200
  if preset == "tiny":
    c.model.width = 0.125
    c.data.image_size = 8
    c.batch_size = 16
    c.checkpoint_every_steps = 2
  elif preset == "stl10":
    # STL-10 trains on its labelled split: the unlabelled one has no labels to fit.
    c.data.train_split = "train"
    c.data.image_size = 96
  elif preset == "imagenet2012":
    c.model.stem = "imagenet"
    c.batch_size = 1024
    c.num_epochs = 90
    c.dtype = "bfloat16"
    c.supervised.label_smoothing = 0.1
    c.optim.update(weight_decay=1e-4, warmup_steps=5 * 1_281_167 // 1024)
  return c
