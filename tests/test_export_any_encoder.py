"""contrastive_jax.export for the encoders other than models/resnet.ResNet: a wide ResNet
(FixMatch) and a pre-activation trunk (CPC v2's ResNet-v2 family) go to npz and safetensors bit
for bit, with their architecture in the metadata, and torch and detectron2 refuse them in one
line before any checkpoint is restored.

The expected arrays are read from the checkpoint itself (tests/helpers.read_checkpoint), never
through the export code. Runs are saved without training: a fresh state with every array drawn
at random, so no two arrays agree by chance and FixMatch's weight average differs from its
trained weights.
"""
import json
import os
import struct
import sys

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing, export, optim, parallel
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from contrastive_jax.models import resnet_v2 as resnet_v2_lib
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP = 3
# A pre-activation trunk of 1, 1 and 2 blocks (the code of ResNet-v2-101 and -161, fewer blocks):
# export's path does not depend on the block count, and 30 blocks cost minutes to initialise.
TINY_V2 = 14
TINY_V2_STACKS = ((1, 64, 256), (1, 128, 512), (2, 256, 1024))


@pytest.fixture(scope="module", autouse=True)
def _tiny_v2_depth():
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(resnet_v2_lib.STACKS, TINY_V2, TINY_V2_STACKS)
    yield


def _drawn(tree, seed):
  """Every floating-point leaf replaced by a draw of its shape (positive, as variances are)."""
  rng = np.random.default_rng(seed)

  def one(x):
    if not np.issubdtype(x.dtype, np.floating):
      return x
    return jax.device_put(rng.uniform(0.5, 1.5, x.shape).astype(x.dtype), x.sharding)

  return jax.tree.map(one, tree)


def _random_run(workdir, config_name, keys=None, **model):
  """A work directory as training leaves it (config.json, a checkpoint at STEP) holding the
  tiny preset of configs/<config_name>.py with `model` and dotted `keys` overrides, every
  array drawn."""
  config = helpers.parse_config("config", os.path.join(ROOT, "configs", f"{config_name}.py"),
                                "tiny")
  config.unlock()
  config.model.update(model)
  helpers.set_keys(config, keys or {})
  method = get_method(config)
  tx, _ = optim.build_optimizer(config.optim, config.batch_size, 1)
  state = step_lib.create_train_state(method, tx, config.seed, parallel.make_mesh(1))
  state = state.replace(params=_drawn(state.params, 1), batch_stats=_drawn(state.batch_stats, 2),
                        extra=_drawn(state.extra, 3))
  return helpers.save_run(workdir, config, {STEP: state})


@pytest.fixture(scope="module")
def wide_resnet(tmp_path_factory):
  """FixMatch on a WRN-10-0.25 (the smallest depth, 6n + 4 with n = 1): 16, 4, 8, 16 channels."""
  return _random_run(tmp_path_factory.mktemp("wide_resnet"), "fixmatch",
                     {"supervised.num_classes": 10},  # Not from the dataset: none is opened.
                     arch="wide_resnet", depth=10, width=0.25, stem="cifar")


@pytest.fixture(scope="module")
def resnet_v2(tmp_path_factory):
  """CPC v2 on the pre-activation ResNet-v2 trunk (TINY_V2_STACKS) at width 1/16, LayerNorm
  from config.cpc.norm, on the tiny preset's 8 px patches."""
  return _random_run(tmp_path_factory.mktemp("resnet_v2"), "cpc_v2", arch="resnet_v2",
                     depth=TINY_V2, width=0.0625)


def _path_items(tree, prefix=""):
  return {prefix + jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _subtree(tree, path):
  for key in path.split("/"):
    tree = tree.get(key, {})
  return tree


def _read_safetensors(path):
  """An independent reader of the format: u64 header size, JSON header, raw little-endian data."""
  blob = open(path, "rb").read()
  (size,) = struct.unpack("<Q", blob[:8])
  header = json.loads(blob[8:8 + size])
  dtypes = {"F32": "<f4", "I32": "<i4", "I64": "<i8"}
  out = {}
  for name, info in header.items():
    if name != "__metadata__":
      begin, end = info["data_offsets"]
      out[name] = np.frombuffer(blob[8 + size + begin:8 + size + end],
                                dtypes[info["dtype"]]).reshape(info["shape"])
  return out, json.loads(header["__metadata__"]["contrastive_jax"])


def _exported(workdir, tmp_path, heads):
  """(npz arrays, safetensors arrays, sidecar JSON of each) of the latest checkpoint."""
  export.export(workdir, "npz", heads=heads, output=str(tmp_path / "e.npz"))
  export.export(workdir, "safetensors", heads=heads, output=str(tmp_path / "e.safetensors"))
  with np.load(tmp_path / "e.npz") as npz:
    got_npz = dict(npz)
  got_st, st_meta = _read_safetensors(tmp_path / "e.safetensors")
  meta = json.loads((tmp_path / "e.npz.json").read_text())
  assert json.loads((tmp_path / "e.safetensors.json").read_text()) == st_meta
  return got_npz, got_st, meta, st_meta


def _assert_bit_for_bit(got, want):
  assert set(got) == set(want)
  for name, value in want.items():
    assert got[name].dtype == value.dtype, name
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_wide_resnet_exports_its_weight_average_bit_for_bit(wide_resnet, tmp_path):
  """FixMatch's evaluators read the weight average (extra/ema), so export writes that one."""
  saved = helpers.read_checkpoint(wide_resnet, STEP)
  ema = saved["extra"]["ema"]
  want = {**_path_items(ema["params"]["encoder"], "encoder/"),
          **_path_items(ema["batch_stats"]["encoder"], "encoder/")}
  heads = {k: v for k, v in {**_path_items(ema["params"]),
                             **_path_items(ema["batch_stats"])}.items()
           if not k.startswith("encoder/")}
  assert heads and "encoder/blocks/1/shortcut/kernel" in want  # Group 2 projects and strides.
  trained = _path_items(saved["params"]["encoder"], "encoder/")
  assert not np.array_equal(trained["encoder/stem/kernel"], want["encoder/stem/kernel"])
  got_npz, got_st, meta, st_meta = _exported(wide_resnet, tmp_path, heads=True)
  for got in (got_npz, got_st):
    _assert_bit_for_bit(got, {**want, **heads})
  assert meta == {**st_meta, "format": "npz"}
  assert meta["step"] == STEP and meta["method"] == "fixmatch"
  assert meta["architecture"] == {
      "arch": "wide_resnet", "model": "contrastive_jax.models.wide_resnet.WideResNet",
      "depth": 10, "width": 0.25, "stem": "cifar", "norm": "batch",
      "epsilon": 1e-3,  # FixMatch's reference BatchNorm (TensorFlow's default).
      "stem_width": 16, "out_features": 16}
  assert meta["input"]["mean"] == [0.5] * 3 and meta["input"]["std"] == [0.25] * 3
  assert "npz and safetensors only" in meta["formats"] and "wide_resnet" in meta["formats"]


def test_resnet_v2_trunk_exports_bit_for_bit(resnet_v2, tmp_path):
  """CPC v2 keeps its encoder at patch_encoder/encoder; without --heads nothing else is written."""
  saved = helpers.read_checkpoint(resnet_v2, STEP)
  want = {**_path_items(_subtree(saved["params"], "patch_encoder/encoder"), "encoder/"),
          **_path_items(_subtree(saved["batch_stats"], "patch_encoder/encoder"), "encoder/")}
  assert "encoder/final_norm/scale" in want and "encoder/blocks/3/convs/2/kernel" in want
  got_npz, got_st, meta, _ = _exported(resnet_v2, tmp_path, heads=False)
  for got in (got_npz, got_st):
    _assert_bit_for_bit(got, want)
  assert meta["architecture"] == {
      "arch": "resnet_v2", "model": "contrastive_jax.models.resnet_v2.PreActResNet",
      "depth": TINY_V2, "width": 0.0625, "stem": "cifar",
      "norm": "layer", "epsilon": 1e-5,  # config.cpc.norm, not config.model.norm.
      "stem_width": 4, "out_features": 64}  # 64 and 1024 channels at width 1/16.
  assert meta["heads"] == [] and "resnet_v2" in meta["formats"]


@pytest.mark.parametrize("run", ["wide_resnet", "resnet_v2"])
@pytest.mark.parametrize("fmt,layout", [("torch", "torchvision's ResNet layout"),
                                        ("detectron2", "detectron2's ResNet backbone layout")])
def test_torch_and_detectron2_refuse_them_before_restoring(request, run, fmt, layout, tmp_path,
                                                           monkeypatch):
  """One line naming the format, the architecture and the formats that work, with PyTorch
  absent (its install hint would send the user the wrong way) and the restore never reached."""
  workdir = request.getfixturevalue(run)

  def restore(*args, **kwargs):
    raise AssertionError("the checkpoint was restored")

  monkeypatch.setattr(checkpointing.Checkpointer, "restore", restore)
  monkeypatch.setitem(sys.modules, "torch", None)
  out = tmp_path / "e.out"
  with pytest.raises(ValueError) as error:
    export.export(workdir, fmt, output=str(out))
  assert str(error.value) == (f"--format={fmt} writes {layout}; this run's encoder is "
                              f"model.arch={run!r}; use --format=npz or safetensors.")
  assert not out.exists() and not os.path.exists(str(out) + ".json")
