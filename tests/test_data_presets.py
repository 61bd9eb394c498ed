"""Dataset presets: same keys everywhere, the paper's sizes and strengths, clear unknown names."""
import pytest

from contrastive_jax import presets


def test_every_preset_has_the_same_keys():
  base_data = set(presets.data_config().keys())
  base_aug = set(presets.augment_config().keys())
  for preset in presets.PRESETS:
    assert set(presets.data_config(preset).keys()) == base_data
    assert set(presets.augment_config(preset).keys()) == base_aug


def test_paper_settings():
  assert presets.data_config().source == "digits"
  cifar = presets.augment_config("cifar10")
  assert cifar.color_strength == 0.5 and cifar.blur_prob == 0.0
  imagenet_data = presets.data_config("imagenet2012")
  assert imagenet_data.image_size == 224 and imagenet_data.eval_split == "validation"
  imagenet = presets.augment_config("imagenet2012")
  assert imagenet.color_strength == 1.0 and imagenet.blur_prob > 0
  stl = presets.data_config("stl10")
  assert stl.train_split == "unlabelled" and stl.image_size == 96
  assert presets.data_config("cifar10_folder").source == "folder"
  assert not presets.data_config("cifar100").download


def test_unknown_preset_lists_valid_names():
  with pytest.raises(ValueError, match="cifar10_folder"):
    presets.data_config("mnist")
  with pytest.raises(ValueError, match="imagenet2012"):
    presets.augment_config("mnist")
