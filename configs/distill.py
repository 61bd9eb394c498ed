"""Distillation (SimCLRv2, Chen et al., 2020b): a student learns a fine-tuned teacher's tempered
predictions on the unlabelled images; self-distillation and big-to-small are both this config.

  # 1. pretrain, 2. fine-tune on the labelled few (the teacher), 3. distil:
  python -m contrastive_jax.main --config=configs/simclr.py --workdir=runs/pre
  python -m contrastive_jax.main --config=configs/supervised.py --workdir=runs/teacher \\
      --config.init_from.workdir=runs/pre --config.data.train_subset.fraction=0.1
  python -m contrastive_jax.main --config=configs/distill.py --workdir=runs/student \\
      --config.distill.teacher.workdir=runs/teacher

Presets: digits (default), tiny (tests), cifar10, cifar10_folder, cifar100, stl10, imagenet2012.
Everything but `config.distill` and `config.method` is configs/supervised.py's preset of the
same name: the student is that classifier.

config.distill:
  teacher.workdir     the teacher: a finished classifier run (supervised or distill).
  teacher.step        its checkpoint (-1: the latest).
  teacher.arch, .depth, .width, .stem, .norm
                      the teacher's encoder where it differs from the student's config.model
                      (0 / "": the same: self-distillation); checked against the teacher run.
  teacher.hidden_dims the teacher's hidden layers (SimCLRv2 fine-tunes from the projection
                      head's first layer: one layer of the head's width).
  temperature         t of both softmaxes; SimCLRv2 section 2: t = 1.
  alpha               weight of the distillation term; 1 - alpha weighs a cross-entropy on a
                      class-stratified labelled batch (SimCLRv2's distillation "with labels"
                      variant; 1: unlabelled images only, the paper's default).
  label_fraction, per_class, index_file, subset_seed
                      the labelled subset of that term, as the evaluators draw it.
  classes_per_batch, images_per_class
                      the labelled batch of each step.
  hard_labels         the teacher's most probable class as the target (Noisy Student's hard
                      pseudo-labels) instead of its probabilities.
  min_confidence      rows whose teacher probability is below this are left out (Noisy
                      Student filters at 0.3).
  balance             every pseudo-class in a batch carries the same total weight (a per-batch
                      form of Noisy Student's class balancing, which duplicates or drops images
                      over the whole unlabelled set).
  noise.augment       the student sees views drawn with config.augment on the device, the
                      teacher the clean image (needs config.augment.on_device=True).
  noise.randaugment   RandAugment (two ops, random magnitudes: ops/randaugment.py) on top of
                      those views (needs noise.augment).
  noise.dropout       dropout before the student's classifier (Noisy Student: 0.5).

SimCLRv2 (section 3, settings): distillation on unlabelled images only with t = 1, the
pretraining's optimiser, learning-rate schedule, weight decay and batch size (LARS, 0.3 x B/256
as configs/simclr.py's ImageNet preset), 400 epochs; the teacher is fine-tuned from the
projection head's first layer. The smaller presets train the student with configs/supervised.py's
recipe. Augmentation: random crop and flip only, the same view for teacher and student.
"""
import ml_collections

from contrastive_jax import presets

PRESETS = ("digits", "tiny", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset = arg or "digits"
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r} for configs/distill.py; valid: {PRESETS}.")
  c = presets.sibling_config(__file__, "supervised.py", preset)
  c.method = "distill"
  c.distill = ml_collections.ConfigDict(dict(
      teacher=dict(workdir="", step=-1, arch="", depth=0, width=0.0, stem="", norm="",
                   hidden_dims=()),
      temperature=1.0, alpha=1.0,
      hard_labels=False, min_confidence=0.0, balance=False,
      noise=dict(augment=False, randaugment=False, dropout=0.0),
      label_fraction=0.1, per_class=0, index_file="", subset_seed=0,
      classes_per_batch=10, images_per_class=4))
  if preset == "tiny":
    c.distill.update(classes_per_batch=4, images_per_class=2)
  elif preset == "imagenet2012":
    c.num_epochs = 400
    c.batch_size = 4096
    c.supervised.label_smoothing = 0.0
    c.optim.update(name="lars", base_lr=0.3, weight_decay=1e-6, momentum=0.9,
                   warmup_steps=10 * 1_281_167 // 4096)
    c.distill.teacher.hidden_dims = (2048,)
  return c
