"""Noisy Student (Xie et al., 2020, "Self-training with Noisy Student improves ImageNet
classification"): a teacher labels the unlabelled images, an equal-or-larger student learns
them under noise, the student becomes the next teacher.

  python -m contrastive_jax.main --config=configs/noisy_student.py --workdir=runs/ns \\
      --config.distill.teacher.workdir=runs/teacher   # a fine-tuned classifier run

Presets: configs/distill.py's (digits, tiny, cifar10, cifar10_folder, cifar100, stl10,
imagenet2012). One command runs `noisy_student.iterations` distill runs in
<workdir>/iteration_<k> (contrastive_jax/self_training.py); rerunning it skips finished
iterations and resumes the unfinished one.

config.noisy_student:
  iterations  how many students, each taught by the one before.
  depths, widths
              the student's config.model.depth / width per iteration (empty: config.model);
              the paper makes each student as large or larger than its teacher.

The paper's settings as config.distill keys: soft pseudo-labels (hard_labels=False), images the
teacher is less than 0.3 sure of left out (min_confidence=0.3), class balancing (balance:
here per batch), noise: input augmentation (noise.augment: config.augment's crop, flip and colour on
the device, then RandAugment with two ops, noise.randaugment; the paper uses RandAugment at a
fixed magnitude 27, ours draws each op's magnitude from its range as FixMatch does), dropout 0.5
before the classifier (noise.dropout) and stochastic depth with survival probability 0.8 at
the last block, decaying linearly from 1 at the first (config.model.drop_path = 0.2). Not here:
the paper's duplication of images of rare classes across the whole unlabelled set (the
balancing is per batch).
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/noisy_student.py; valid: "
                     f"{PRESETS}.")
  c = presets.sibling_config(__file__, "distill.py", preset)
  c.noisy_student = ml_collections.ConfigDict(dict(iterations=2, depths=(), widths=()))
  c.distill.update(hard_labels=False, min_confidence=0.3, balance=True)
  c.distill.noise.update(augment=True, randaugment=True, dropout=0.5)
  c.model.drop_path = 0.2
  # The student's input noise: crop, flip and colour on the device.
  c.augment.update(on_device=True, color_prob=0.8, grayscale_prob=0.2)
  if preset == "tiny":
    c.distill.min_confidence = 0.0  # A 2-step teacher is unsure of everything.
  return c
