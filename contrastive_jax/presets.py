"""The config scaffolding every experiment config shares: defaults, data/augment presets,
model, optimiser and evaluator blocks, and the run lengths of the presets.

Pure ml_collections (no JAX, no TensorFlow), so config files can import it freely. Every
preset returns the same set of keys, so a command-line override works whichever preset a
config starts from.
Image sizes and augmentation strengths follow the SimCLR paper (Chen et al., 2020): CIFAR at
32 px with colour strength 0.5 and no blur, ImageNet at 224 px with strength 1.0 and blur.

Usage in a config file:

  config = presets.experiment("simclr", "cifar10", PRESETS, model=dict(depth=50))
  config.data.image_size = 32
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

PRESETS = ("digits", "cifar10", "cifar10_folder", "cifar100", "stl10", "imagenet2012")


def _check_preset(preset: str) -> None:
  if preset not in PRESETS:
    raise ValueError(f"Unknown dataset preset {preset!r}; valid presets: {', '.join(PRESETS)}.")


def _base_data() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      # "digits" (scikit-learn, offline) | "tfds" | "folder" | "npz".
      "source": "digits",
      # TFDS name (source == "tfds").
      "name": "",
      # TFDS data_dir; None means TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
      # Keys without a value are typed placeholders, None until set: the command line refuses
      # to override a plain None (`--config.data.data_dir=...` needs to know the type).
      "data_dir": config_dict.placeholder(str),
      # Whether TFDS may download and prepare a missing dataset (needs network).
      "download": False,
      # Folder root (<path>/<split>/<class>/*.jpg) or .npz file; "{split}" in an .npz path
      # is replaced by the split name.
      "path": "",
      "train_split": "train",
      "eval_split": "test",
      # The labelled split evaluators train on; "" means train_split (STL-10: "train", next
      # to the "unlabelled" split it pretrains on).
      "labelled_split": "",
      # Side of the square images the pipeline produces, for training crops and evaluation.
      "image_size": 32,
      # Evaluation resizes the shorter side to image_size / eval_crop_fraction, then centre-crops
      # image_size (0.875 is the usual ImageNet 224/256; 1.0 keeps the whole square image).
      "eval_crop_fraction": 1.0,
      # Number of classes; None infers it (TFDS metadata, folder count, max npz label + 1).
      "num_classes": config_dict.placeholder(int),
      # Cache decoded images in memory after the first epoch (small datasets only).
      "cache": False,
      # Shuffle buffer for sources whose records are whole images (TFDS); sources whose records
      # are file names or array indices shuffle the whole split instead.
      "shuffle_buffer": 10_000,
      # Skip (and count) unreadable image files instead of raising an error naming them.
      "skip_corrupt": False,
      # Train on a labelled subset of train_split (data/train_subset.py): per_class images of
      # every class, an index_file, or a class-balanced fraction, drawn with seed (the
      # evaluators' subsets for the same values). The defaults train on the whole split.
      "train_subset": {"fraction": 1.0, "per_class": 0, "index_file": "", "seed": 0},
  })


def data_config(preset: str = "digits") -> ml_collections.ConfigDict:
  """Returns the `config.data` block of a preset (see module docstring for the keys)."""
  _check_preset(preset)
  c = _base_data()
  if preset == "digits":
    # 1,797 8x8 digits bundled with scikit-learn: the offline default, split 80/20.
    c.image_size = 32
  elif preset in ("cifar10", "cifar100"):
    c.source, c.name = "tfds", preset
    c.cache, c.shuffle_buffer = True, 50_000
  elif preset == "cifar10_folder":
    # CIFAR-10 as JPEGs, e.g. ../shared/data/cifar10-jpeg.tar.gz unpacked:
    # <path>/{train,test}/<class>/NNNN.jpg.
    c.source, c.path = "folder", "/tmp/cifar10"
    c.cache, c.shuffle_buffer = True, 50_000
  elif preset == "stl10":
    # Pretrain on the 100k unlabelled images (labels -1), evaluate on train/test.
    c.source, c.name = "tfds", "stl10"
    c.train_split, c.eval_split, c.labelled_split = "unlabelled", "test", "train"
    c.image_size = 96
  elif preset == "imagenet2012":
    c.source, c.name = "tfds", "imagenet2012"
    c.train_split, c.eval_split = "train", "validation"
    c.image_size, c.eval_crop_fraction = 224, 0.875
    c.shuffle_buffer = 50_000
  return c


def augment_config(preset: str = "digits") -> ml_collections.ConfigDict:
  """Returns the `config.augment` block of a preset: SimCLR augmentation strengths.

  Keys: random resized crop `crop_scale` (area fraction) and `crop_ratio` (aspect ratio)
  drawn by `crop`; `flip` (horizontal, p=0.5); colour jitter of strength `color_strength` = s
  (`brightness`, contrast and saturation 0.8s, hue 0.2s, in random order) applied with
  `color_prob`; `grayscale_prob`; Gaussian blur with `blur_prob` (both views alike), sigma ~
  U(`blur_sigma`) per image, kernel `blur_kernel_frac` of the image size; `on_device` moves all
  of it to the accelerator, which crops from images of up to `raw_size` pixels a side.
  Where each convention comes from: docs/augmentation.md.
  """
  _check_preset(preset)
  c = ml_collections.ConfigDict({
      # "inception": the SimCLR reference code's crop, TF's sample_distorted_bounding_box
      # (>= 10% of the image covered, 100 attempts); "torchvision": RandomResizedCrop's.
      "crop": "inception",
      "crop_scale": (0.08, 1.0),
      "crop_ratio": (3 / 4, 4 / 3),
      # "multiplicative" (SimCLRv2 code's default) or "additive" (SimCLR v1).
      "brightness": "multiplicative",
      "flip": True,
      "color_strength": 0.5,
      "color_prob": 0.8,
      "grayscale_prob": 0.2,
      "blur_prob": 0.0,
      "blur_sigma": (0.1, 2.0),
      "blur_kernel_frac": 0.1,
      # Augment on the accelerator (contrastive_jax/ops/augment.py) instead of in tf.data:
      # methods that support it then ask for raw images, read with numpy alone where the split
      # fits in memory (digits, npz, and folder/TFDS with data.cache). Same recipe and values.
      "on_device": False,
      # On-device augmentation: the host sends each image whole, downscaled only if a side
      # exceeds raw_size (0: image_size), so crops reach its edges at up to that resolution.
      "raw_size": 0,
  })
  if preset == "digits":
    # An 8x8 digit cropped to 8% of its area is noise, and a mirrored digit is another glyph.
    c.crop_scale, c.flip = (0.3, 1.0), False
  elif preset in ("stl10", "imagenet2012"):
    # SimCLR's ImageNet setting (the paper blurs with p=0.5); STL-10 is an ImageNet subset.
    c.color_strength, c.blur_prob = 1.0, 0.5
  if preset == "imagenet2012":
    # Most ImageNet photos are <= 500 px a side; crops then come from near full resolution.
    c.raw_size = 448
  return c


def optim_config(**overrides) -> ml_collections.ConfigDict:
  """`config.optim` (contrastive_jax/optim.py): LARS at 0.3 x B/256, cosine, SimCLR's decay."""
  c = ml_collections.ConfigDict(dict(
      name="lars", base_lr=0.3, lr_scaling="linear", schedule="cosine", warmup_steps=0,
      weight_decay=1e-6, momentum=0.9, trust_coefficient=0.001, grad_clip_norm=0.0))
  c.update(overrides)
  return c


def model_config(**overrides) -> ml_collections.ConfigDict:
  """`config.model`: the encoder (models/factory.py). `arch` "resnet" (models/resnet.py) or
  "wide_resnet" (models/wide_resnet.py: depth 6n + 4, width the widen factor k, e.g. 28 and 2);
  `drop_path` stochastic depth's rate at the last block, `dropout` the wide ResNet's dropout
  between a block's convolutions (both 0: off; on, the method must pass the encoder a key)."""
  c = ml_collections.ConfigDict(dict(arch="resnet", depth=50, width=1.0, stem="cifar",
                                     norm="batch", bn_momentum=0.9, bn_cross_replica=True,
                                     drop_path=0.0, dropout=0.0))
  c.update(overrides)
  return c


def supervised_block(**overrides) -> ml_collections.ConfigDict:
  """`config.supervised` (methods/supervised.py)."""
  c = ml_collections.ConfigDict(dict(num_classes=0, label_smoothing=0.0, hidden_dims=(),
                                     hidden_batch_norm=True, patch_size=0, patch_stride=0,
                                     zero_init=True))
  c.update(overrides)
  return c


def semi_block(**overrides) -> ml_collections.ConfigDict:
  """`config.semi` (methods/semi.py): FixMatch's CIFAR-10 values (Sohn et al., 2020, table 4:
  mu = 7, lambda_u = 1, EMA 0.999) with 250 labels (25 per class)."""
  c = ml_collections.ConfigDict(dict(
      mu=7, lambda_u=1.0, ramp_steps=0, label_fraction=1.0, per_class=25, index_file="",
      subset_seed=0, translate=0.125, ema_decay=0.999, eval_ema=True,
      strong=dict(num_ops=2, ops=(), cutout=0.5)))
  c.update(overrides)
  return c


def semi_experiment(method: str, preset: str, presets: tuple[str, ...]
                    ) -> ml_collections.ConfigDict:
  """The base of a semi-supervised config (configs/fixmatch.py, mixmatch.py,
  pseudo_label.py): the `supervised` classifier on a Wide ResNet-28-2 (FixMatch's and
  MixMatch's CIFAR network), raw images augmented on the accelerator, the labelled batch B =
  batch_size / mu, SGD with Nesterov momentum and FixMatch's cosine, 2^20 steps, and the
  classifier's accuracy (its weight average) after training."""
  c = experiment(method, preset, presets, depth=28, width=2.0)
  # FixMatch's reference network: BatchNorm momentum 0.001 in PyTorch's convention.
  c.model.update(arch="wide_resnet", bn_momentum=0.999)
  c.supervised = supervised_block(zero_init=False)
  c.semi = semi_block()
  c.augment.on_device = True
  c.optim = optim_config(name="sgd_nesterov", base_lr=0.03, lr_scaling="none",
                         schedule="fixmatch_cosine", weight_decay=5e-4, momentum=0.9)
  c.batch_size = 64 * c.semi.mu
  c.num_steps = 2**20
  run_length(c, preset)
  c.evals.linear.at_end = False
  c.evals.classifier = classifier_eval(at_end=True)
  if preset == "cifar100":
    # FixMatch's CIFAR-100 network and decay: WRN-28-8, 1e-3; 2,500 labels.
    c.model.width = 8.0
    c.optim.weight_decay = 1e-3
  elif preset in ("digits", "tiny"):
    # Offline: a small ResNet on 16 px digits, 5 labels per class, B = 16, mu = 4.
    c.model.update(arch="resnet", depth=18, width=0.25, bn_momentum=0.9)
    c.data.image_size = 16
    c.semi.update(per_class=5, mu=4)
    c.batch_size = 64
    c.num_steps = 400
    c.optim.base_lr = 0.1
    c.checkpoint_every_steps = 200
    if preset == "tiny":
      c.model.update(depth=10, width=0.125)
      c.data.image_size = 8
      c.semi.update(per_class=2, mu=2)
      c.batch_size = 16  # B = 8: one labelled image per fake device in the tests.
      # Three ops (one per kind: identity, colour, geometry) compile in a fraction of the time
      # of all 14; tests/test_randaugment.py covers every op.
      c.semi.strong.ops = ("Identity", "Brightness", "TranslateX")
      c.num_steps = 3
  elif preset == "imagenet2012":
    # FixMatch's ImageNet setting (appendix): ResNet-50, B = 1024 labelled, mu = 5,
    # tau = 0.7 (set by configs/fixmatch.py), lambda_u = 10, lr 0.1, weight decay 3e-4,
    # 10% of the labels.
    c.model.update(arch="resnet", depth=50, width=1.0, stem="imagenet", bn_momentum=0.9)
    c.semi.update(mu=5, lambda_u=10.0, per_class=0, label_fraction=0.1)
    c.batch_size = 1024 * 5
    c.optim.update(base_lr=0.1, weight_decay=3e-4, warmup_steps=5 * 1_281_167 // 1024)
    c.num_steps = 300 * 1_281_167 // 1024
    c.dtype = "bfloat16"
  return c


# ----------------------------------------------------------------------------------------------
# Evaluator blocks (contrastive_jax/evaluators): `config.evals = {name: block}`, the same keys
# in a pretraining config and in configs/eval.py.
#   every_steps         run every N training steps, and at the last one (0: not in training)
#   at_end              run after training (the evaluate command runs every block regardless)
#   batch_size          feature-extraction batch (global)
#   max_train_examples  class-balanced cap of the labelled split (0: all) ...
#   max_test_examples   ... and of the evaluation split


def _eval_block(kind: str, **keys) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(type=kind, every_steps=0, at_end=False, batch_size=256,
                                        max_train_examples=0, max_test_examples=0, **keys))


def _subsets(**keys) -> dict:
  """Labelled subsets: every fraction, every per_class count and the index file is one subset,
  each evaluated with every seed (contrastive_jax/data/subsets.py)."""
  return dict(dict(fractions=(1.0,), per_class=(), index_file="", seeds=(0,)), **keys)


def knn_eval(**overrides) -> ml_collections.ConfigDict:
  """Weighted kNN (Wu et al., 2018): k neighbours, votes exp(similarity / temperature)."""
  c = _eval_block("knn", k=200, temperature=0.1)
  c.update(overrides)
  return c


def linear_eval(**overrides) -> ml_collections.ConfigDict:
  """Linear probe on frozen features (evaluators/linear.py); `random_init` also probes a
  randomly initialised encoder, for reference.

  solver="lbfgs": `steps` full-batch L-BFGS steps per L2 value on the streamed features.
  solver="sgd": SimCLR's ImageNet protocol, keys under `sgd`: a linear head on the frozen
  encoder, trained through the training pipeline with random crop + flip, momentum SGD with
  Nesterov, lr 0.1 x B/256, cosine decay, no warmup, weight decay 1e-6, batch 4096, 90 epochs
  (the ImageNet linear-eval command of the google-research/simclr README; Nesterov, cosine
  and no warmup confirmed by the authors in google-research/simclr issue #5, which also
  notes that L-BFGS was used for the transfer experiments only).
  """
  c = _eval_block(
      "linear", **_subsets(), steps=200, random_init=False, solver="lbfgs",
      sgd=dict(epochs=90.0, batch_size=4096, base_lr=0.1, lr_scaling="linear", momentum=0.9,
               nesterov=True, weight_decay=1e-6, optimizer="sgd",  # "sgd" | "lars"
               augment=True, crop_scale=(0.08, 1.0), flip=True))
  c.update(overrides)
  return c


def finetune_eval(**overrides) -> ml_collections.ConfigDict:
  """Fine-tuning (evaluators/finetune.py). SimCLR appendix B.5: momentum SGD without Nesterov,
  lr 0.05 x B/256, no weight decay, no warmup; random crop + flip only."""
  c = _eval_block(
      "finetune", **_subsets(),
      steps=1000,  # Per subset; epochs > 0 overrides: ceil(epochs x subset size / batch).
      epochs=0.0, train_batch_size=256,
      from_head_layer=0,  # 0: encoder output; k: after the projection head's first k layers.
      crop_scale=(0.25, 1.0),  # Random resized crop, area fraction.
      flip="auto",  # "auto": the evaluated run's augment.flip; "true" / "false".
      label_smoothing=0.0,
      optim=optim_config(name="sgd", base_lr=0.05, lr_scaling="linear", schedule="cosine",
                         warmup_steps=0, weight_decay=0.0, momentum=0.9),
      # Learning rates and weight decays to choose from on a held-out part of each subset
      # (empty: the optim values).
      sweep=dict(base_lr=(), weight_decay=(), val_fraction=0.2))
  c.update(overrides)
  return c


def supervised_eval(**overrides) -> ml_collections.ConfigDict:
  """The supervised baseline: `finetune_eval`'s keys, from a random initialisation."""
  c = finetune_eval()
  c.type = "supervised"
  c.update(overrides)
  return c


def grid_classifier_eval(**overrides) -> ml_collections.ConfigDict:
  """CPC v2's low-data classifier (evaluators/grid_classifier.py): a ResNet g_phi on the grid
  of patch features, per labelled subset; pair it with `supervised_eval` on the same subsets.
  `finetune_eval`'s keys but from_head_layer, plus mode ("frozen" encoder, or "finetune"d
  jointly) and g_phi's depth (residual blocks), width (feature channels), bottleneck and norm.
  The paper (Hénaff et al., 2020, efficient classification) uses 11 blocks of 4096 channels
  with 1024-channel bottlenecks; its optimiser for g_phi is not restated here: the SGD below
  is fine-tuning's, with weight decay as for training from scratch."""
  c = finetune_eval(optim=optim_config(name="sgd", base_lr=0.1, lr_scaling="linear",
                                       schedule="cosine", warmup_steps=0, weight_decay=1e-4,
                                       momentum=0.9))
  del c["from_head_layer"]
  c.update(type="grid_classifier", mode="frozen", depth=11, width=4096, bottleneck=1024,
           norm="layer")
  c.update(overrides)
  return c


def classifier_eval(**overrides) -> ml_collections.ConfigDict:
  """A classifier run's own top-1 / top-5 on the evaluation split (evaluators/classifier.py),
  with the label fraction it was trained with; no row for runs without a classifier."""
  c = _eval_block("classifier")
  c.update(overrides)
  return c


def base_config() -> ml_collections.ConfigDict:
  """Everything except the method, model and data, which each experiment sets."""
  c = ml_collections.ConfigDict()
  c.method = ""
  c.seed = 0
  c.dtype = "float32"  # Compute dtype; "bfloat16" keeps float32 parameters and loss.
  c.batch_size = 256  # Global, over all devices and processes.
  c.num_epochs = 100
  c.num_steps = -1  # > 0 overrides num_epochs.
  c.optim = optim_config()
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.async_checkpointing = True
  c.skip_nonfinite_updates = False  # True: skip a NaN/Inf update instead of stopping.
  # Start from another run's parameters: `workdir` ("" for none), its checkpoint `step` (-1:
  # the latest) and `mapping`, "source=target" subtree pairs ('/'-separated, comma between
  # pairs; "" maps the source method's encoder onto this one's).
  c.init_from = ml_collections.ConfigDict(dict(workdir="", step=-1, mapping=""))
  c.evals = ml_collections.ConfigDict(dict(
      # After pretraining: linear probe on frozen features, and on a random encoder too.
      linear=linear_eval(at_end=True, max_train_examples=50_000, random_init=True),
      # During pretraining (every_steps > 0): kNN on class-balanced caps of both splits.
      knn=knn_eval(max_train_examples=10_000, max_test_examples=10_000),
  ))
  return c


def experiment(method: str, preset: str, presets: tuple[str, ...],
               **model) -> ml_collections.ConfigDict:
  """The base of an experiment config: `method`, the data and augment presets of `preset`
  ("tiny" uses digits) and `config.model` with `model` overrides."""
  if preset not in presets:
    raise ValueError(f"Unknown preset {preset!r} for method {method}; valid: {presets}.")
  c = base_config()
  c.method = method
  data_preset = "digits" if preset == "tiny" else preset
  c.data = data_config(data_preset)
  c.augment = augment_config(data_preset)
  c.model = model_config(**model)
  return c


def run_length(c: ml_collections.ConfigDict, preset: str) -> None:
  """Logging, kNN and checkpoint cadence by the size of a preset's run."""
  if preset == "digits":
    c.log_every_steps = 20
    c.evals.knn.every_steps = 100
  elif preset == "tiny":
    # Three steps of a tiny model, with every evaluation and a checkpoint inside them (tests).
    c.num_steps = 3
    c.log_every_steps = 1
    c.checkpoint_every_steps = 2
    c.evals.knn.update(every_steps=3, k=20)
    c.evals.linear.update(max_train_examples=200, steps=20)
  elif preset == "imagenet2012":
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5000
    c.evals.knn.every_steps = 5000
    # The probe at the end: SimCLR's ImageNet linear protocol (linear_eval), streamed through
    # the training pipeline, rather than full-batch L-BFGS on 1.28M feature vectors.
    c.evals.linear.solver = "sgd"
  else:  # CIFAR, STL-10
    c.checkpoint_every_steps = 2000
    c.evals.knn.every_steps = 1000


def load_config_file(path: str, arg: str | None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file at `path` (config files are loaded by path, not as a
  package)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  name = os.path.basename(path).removesuffix(".py")
  spec = importlib.util.spec_from_file_location(f"_cj_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def sibling_config(config_file: str, name: str, arg: str | None) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the config file `name` next to `config_file`: a config that extends
  another (SuNCEt extends SimCLR)."""
  import os  # pylint: disable=g-import-not-at-top
  return load_config_file(os.path.join(os.path.dirname(os.path.abspath(config_file)), name),
                          arg)
