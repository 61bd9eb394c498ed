"""contrastive_jax.export: checkpoint arrays bit for bit (npz, safetensors), torchvision features
equal to the JAX encoder's (torch), detectron2's backbone key set, and the one-line errors.

The reference features come from the project's evaluation path (`runs.Run`, `Method.features`
in eval mode), never from the export code. PyTorch checks need `torch` and `torchvision`, which
`make test` installs (CPU build).
"""
import importlib
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from flax import nnx

from contrastive_jax import export, optim, parallel, runs, storage
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from tests import helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMCLR = os.path.join(ROOT, "configs", "simclr.py")
TORCH_INSTALL = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
NORM_LEAVES = ("weight", "bias", "running_mean", "running_var")


def _config(config_file=SIMCLR, **model):
  config = helpers.parse_config("config", config_file, "tiny")
  config.unlock()
  config.model.update(model)
  config.data.image_size = 16
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Two SimCLR steps of a ResNet-10 with the ImageNet stem on 8 devices, checkpoints 1 and 2:
  BatchNorm statistics moved by training, the stride-2 padding of the stem and the max-pool."""
  config = _config(depth=10, width=0.125, stem="imagenet")
  mesh = parallel.make_mesh(8)
  method = get_method(config)
  tx, schedule = optim.build_optimizer(config.optim, config.batch_size, 2)
  state = step_lib.create_train_state(method, tx, config.seed, mesh)
  train_step = step_lib.make_train_step(method, step_lib.model_defs(method), tx, schedule, mesh,
                                        total_steps=2)
  states = {}
  for step in (1, 2):
    batch = helpers.two_view_batch(config.batch_size, 16, seed=step)
    state, _ = train_step(state, parallel.shard_batch(batch, mesh))
    states[step] = jax.device_get(state)
  return helpers.save_run(tmp_path_factory.mktemp("trained"), config, states)


def _randomised(tree, seed):
  """Normalisation parameters and statistics drawn away from their initial 1s and 0s."""
  rng = np.random.default_rng(seed)
  draw = {"scale": lambda s: rng.uniform(0.5, 1.5, s), "bias": lambda s: rng.normal(0, 0.2, s),
          "mean": lambda s: rng.normal(0, 0.2, s), "var": lambda s: rng.uniform(0.5, 2.0, s)}

  def one(path, x):
    leaf = path[-1].key
    if leaf not in draw:
      return x
    return jax.device_put(draw[leaf](x.shape).astype(x.dtype), x.sharding)

  return jax.tree_util.tree_map_with_path(one, tree)


def _random_run(workdir, config_file=SIMCLR, **model):
  """A run at step 7 holding a freshly initialised model with randomised normalisation layers
  (nothing trained), and the features function of that model in eval mode."""
  config = _config(config_file, **model)
  method = get_method(config)
  tx, _ = optim.build_optimizer(config.optim, config.batch_size, 1)
  state = step_lib.create_train_state(method, tx, config.seed, parallel.make_mesh(1))
  state = state.replace(params=_randomised(state.params, 1),
                        batch_stats=_randomised(state.batch_stats, 2))
  model = step_lib.model_defs(method).merge(state, train=False)
  features = nnx.jit(method.features)
  return (helpers.save_run(workdir, config, {7: state}),
          lambda *images: [np.asarray(features(model, x)) for x in images])


def _jax_features(workdir):
  """The features function of the evaluation path: the run reopened, its model in eval mode."""
  run = runs.Run.open(workdir)
  model = run.defs.merge(run.restore(run.steps()[-1]), train=False)
  features = nnx.jit(run.method.features)
  return lambda *images: [np.asarray(features(model, x)) for x in images]


def _images(size, n=3, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _path_items(tree, prefix):
  return {prefix + jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


# npz and safetensors.


def _checkpoint_arrays(workdir, step, heads):
  """name -> array, as the brief of each format says, read from the checkpoint itself."""
  saved = helpers.read_checkpoint(workdir, step)
  want = {**_path_items(saved["params"]["encoder"], "encoder/"),
          **_path_items(saved["batch_stats"]["encoder"], "encoder/")}
  if heads:
    want.update(_path_items(saved["params"]["head"], "head/"))
    want.update(_path_items(saved["batch_stats"]["head"], "head/"))
  return want


def _read_safetensors(path):
  """An independent reader of the format (u64 header size, JSON header, raw data)."""
  blob = open(path, "rb").read()
  (size,) = struct.unpack("<Q", blob[:8])
  header = json.loads(blob[8:8 + size])
  dtypes = {"F32": "<f4", "I32": "<i4", "U32": "<u4", "I64": "<i8"}
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    begin, end = info["data_offsets"]
    out[name] = np.frombuffer(blob[8 + size + begin:8 + size + end],
                              dtypes[info["dtype"]]).reshape(info["shape"])
  return out, header["__metadata__"]


@pytest.mark.parametrize("step,heads", [(1, True), (None, False)])
def test_npz_and_safetensors_hold_the_checkpoint_bit_for_bit(trained, tmp_path, step, heads):
  want = _checkpoint_arrays(trained, step or 2, heads)
  assert "encoder/blocks/1/shortcut/kernel" in want  # Stage 2 starts with a projection.
  kw = {"step": step} if step else {}
  export.export(trained, "npz", heads=heads, output=str(tmp_path / "e.npz"), **kw)
  export.export(trained, "safetensors", heads=heads, output=str(tmp_path / "e.st"), **kw)
  with np.load(tmp_path / "e.npz") as npz:
    got_npz = dict(npz)
  got_st, meta = _read_safetensors(tmp_path / "e.st")
  for got in (got_npz, got_st):
    assert set(got) == set(want)
    for name, value in want.items():
      assert got[name].dtype == value.dtype, name
      np.testing.assert_array_equal(got[name], value, err_msg=name)
  info = json.loads((tmp_path / "e.npz.json").read_text())
  assert json.loads(meta["contrastive_jax"])["architecture"] == info["architecture"]
  assert info["step"] == (step or 2) and info["input"]["mean"] == [0.5] * 3
  assert info["architecture"] == {"depth": 10, "width": 0.125, "stem": "imagenet",
                                  "norm": "batch", "epsilon": 1e-5, "block": "basic",
                                  "stage_blocks": [1, 1, 1, 1], "stem_width": 8,
                                  "out_features": 64}


def test_the_safetensors_package_reads_the_file(trained, tmp_path):
  safetensors_numpy = pytest.importorskip(
      "safetensors.numpy", reason="the reference reader: pip install safetensors")
  export.export(trained, "safetensors", heads=True, output=str(tmp_path / "e.safetensors"))
  got = safetensors_numpy.load_file(str(tmp_path / "e.safetensors"))
  want = _checkpoint_arrays(trained, 2, heads=True)
  assert set(got) == set(want)
  for name, value in got.items():
    np.testing.assert_array_equal(value, want[name], err_msg=name)


# PyTorch.


def import_torch():
  """torch, with torchvision imported (its models; see below). Raises ImportError without them."""
  torch = importlib.import_module("torch")
  if "torchvision" not in sys.modules:
    try:
      importlib.import_module("torchvision")
    except RuntimeError:
      # PyPI's torchvision is built against CUDA torch: next to the CPU torch its compiled
      # operators (nms, roi_align) do not load, and registering their meta kernels then fails
      # on import. The models are plain Python and need neither, so import without them.
      for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        del sys.modules[name]
      sys.modules["torchvision._meta_registrations"] = types.ModuleType(
          "torchvision._meta_registrations")
      importlib.import_module("torchvision")
  return torch


_TORCH_PROBE = {}


def _torch():
  pytest.importorskip("torch", reason=f"needs PyTorch: {TORCH_INSTALL}")
  if "ok" not in _TORCH_PROBE:
    # First in a child process with TensorFlow and JAX loaded as here: a torch build that
    # crashes next to them (CUDA builds' triton has) must fail one probe, not this worker.
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow, jax; from tests import test_export; "
         "test_export.import_torch()"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    _TORCH_PROBE["ok"] = probe.returncode == 0
    _TORCH_PROBE["why"] = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
  if not _TORCH_PROBE["ok"]:
    pytest.skip(f"torch and torchvision do not import next to JAX and TensorFlow "
                f"({_TORCH_PROBE['why']}): {TORCH_INSTALL}")
  return import_torch()


def _builder():
  """The builder code block of docs/export.md, run as the docs show it."""
  text = open(os.path.join(ROOT, "docs", "export.md"), encoding="utf-8").read()
  code = re.search(r"<!-- torch-builder.*?-->\s*```python\n(.*?)```", text, re.S).group(1)
  namespace = {}
  exec(compile(code, "docs/export.md", "exec"), namespace)  # pylint: disable=exec-used
  return namespace


def _torch_features(torch, model, images):
  x = torch.from_numpy(images).permute(0, 3, 1, 2)
  with torch.no_grad():
    return model((x - 0.5) / 0.25).numpy()


def _check_torch_features(workdir, jax_features, tmp_path):
  torch = _torch()
  out = str(tmp_path / "encoder.pt")
  export.export(workdir, "torch", output=out)
  model = _builder()["load_encoder"](out)  # strict=True inside.
  # Even sizes pad asymmetrically in XLA, odd ones symmetrically.
  images = [_images(16), _images(17)]
  for x, want in zip(images, jax_features(*images)):
    np.testing.assert_allclose(_torch_features(torch, model, x), want, rtol=1e-4, atol=1e-4,
                               err_msg=f"{x.shape[1]} px")


def test_torch_features_equal_the_trained_encoders(trained, tmp_path):
  _check_torch_features(trained, _jax_features(trained), tmp_path)
  state = torch_load(tmp_path / "encoder.pt")
  saved = helpers.read_checkpoint(trained, 2)["batch_stats"]["encoder"]["stem_norm"]
  # The statistics are the trained ones (not the initial 0 and 1), transposed nowhere.
  assert np.abs(saved["mean"]).max() > 1e-3
  np.testing.assert_array_equal(state["bn1.running_mean"], saved["mean"])
  assert int(state["bn1.num_batches_tracked"]) == 2


def torch_load(path):
  torch = _torch()
  return {k: v.numpy() for k, v in torch.load(str(path), map_location="cpu").items()}


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
  """A randomised ResNet-50 at width 1/16 with the ImageNet stem (bottleneck blocks)."""
  return _random_run(tmp_path_factory.mktemp("resnet50"), depth=50, width=0.0625,
                     stem="imagenet")


def test_torch_features_equal_a_randomised_resnet50s(resnet50, tmp_path):
  _check_torch_features(*resnet50, tmp_path)


# Channels per group stay above one where the map is 1x1: a group of one value has variance 0,
# where Flax's E[x^2] - E[x]^2 and PyTorch's two-pass variance differ by rounding against eps.
@pytest.mark.parametrize("model", [dict(depth=10, width=0.125, stem="imagenet", norm="layer"),
                                   dict(depth=10, width=0.5, stem="cifar", norm="group")],
                         ids=["layernorm-imagenet", "groupnorm-cifar"])
def test_torch_features_equal_randomised_encoders_with_other_norms(tmp_path, model):
  _check_torch_features(*_random_run(tmp_path / "run", **model), tmp_path)


def test_stock_torchvision_resnet18_loads_it_and_needs_the_padding(tmp_path):
  """Width 1 with the ImageNet stem: torchvision.models.resnet18 itself, strict. Its own
  symmetric padding gives other features on even sizes; the builder's padding fixes that."""
  torch = _torch()
  import torchvision  # pylint: disable=g-import-not-at-top
  workdir, jax_features = _random_run(tmp_path / "run", depth=18, width=1.0, stem="imagenet")
  out = str(tmp_path / "r18.pt")
  export.export(workdir, "torch", output=out)
  assert json.loads(open(out + ".json").read())["torchvision"]["stock"] == "resnet18"
  model = torchvision.models.resnet18()
  model.fc = torch.nn.Identity()
  model.load_state_dict(torch.load(out, map_location="cpu"), strict=True)
  model.eval()
  images = _images(16, n=2)
  (want,) = jax_features(images)
  assert np.abs(_torch_features(torch, model, images) - want).max() > 1e-2
  _builder()["xla_padding"](model)
  np.testing.assert_allclose(_torch_features(torch, model, images), want, rtol=1e-4, atol=1e-4)


def test_torch_heads_are_the_checkpoints_in_pytorch_layout(trained, tmp_path):
  _torch()
  out = str(tmp_path / "e.pt")
  files = export.export(trained, "torch", heads=True, output=out)
  assert files == [out, out + ".json", out + ".heads.pt"]
  head = helpers.read_checkpoint(trained, 2)["params"]["head"]["layers"]
  heads = torch_load(out + ".heads.pt")
  np.testing.assert_array_equal(heads["head.layers.0.weight"], head["0"]["kernel"].T)
  np.testing.assert_array_equal(heads["head.layers.1.bias"], head["1"]["bias"])


def test_cpc_v2_exports_its_patch_encoder(tmp_path):
  """CPC v2 keeps its encoder at patch_encoder/encoder, with LayerNorm from config.cpc.norm."""
  workdir, _ = _random_run(tmp_path / "run", os.path.join(ROOT, "configs", "cpc_v2.py"))
  export.export(workdir, "npz", heads=True, output=str(tmp_path / "cpc.npz"))
  params = helpers.read_checkpoint(workdir, 7)["params"]
  want = _path_items(params["patch_encoder"]["encoder"], "encoder/")
  with np.load(tmp_path / "cpc.npz") as npz:
    got = dict(npz)
  for name, value in want.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)
  heads = {k for k in got if not k.startswith("encoder/")}
  assert heads and not any(k.startswith("patch_encoder/") for k in heads)
  assert heads == set(_path_items({k: v for k, v in params.items() if k != "patch_encoder"}, ""))
  arch = json.loads((tmp_path / "cpc.npz.json").read_text())["architecture"]
  assert arch["norm"] == "layer" and arch["stem"] == "cifar"


# detectron2.


def _detectron2_keys(counts, bottleneck):
  """detectron2's ResNet backbone (FrozenBN) for stage block counts, written out by hand."""
  norm = lambda p: {f"{p}.norm.{n}" for n in NORM_LEAVES}  # noqa: E731
  keys = {"stem.conv1.weight"} | norm("stem.conv1")
  for stage, count in enumerate(counts):
    for b in range(count):
      prefix = f"res{stage + 2}.{b}"
      for c in range(1, 4 if bottleneck else 3):
        keys |= {f"{prefix}.conv{c}.weight"} | norm(f"{prefix}.conv{c}")
      if b == 0 and (stage > 0 or bottleneck):  # Strides or widens: a projection shortcut.
        keys |= {f"{prefix}.shortcut.weight"} | norm(f"{prefix}.shortcut")
  return keys


def test_detectron2_pickle_has_the_backbone_key_set(resnet50, tmp_path):
  workdir = resnet50[0]
  out = str(tmp_path / "r50.pkl")
  export.export(workdir, "detectron2", output=out)
  with open(out, "rb") as f:
    blob = pickle.load(f, encoding="latin1")
  assert blob["matching_heuristics"] is True and isinstance(blob["__author__"], str)
  weights = blob["model"]
  assert set(weights) == _detectron2_keys((3, 4, 6, 3), bottleneck=True)
  saved = helpers.read_checkpoint(workdir, 7)
  params, stats = saved["params"]["encoder"], saved["batch_stats"]["encoder"]
  # The first block of the second stage is block 3: conv2 strides, the shortcut projects.
  np.testing.assert_array_equal(weights["stem.conv1.weight"],
                                params["stem"]["kernel"].transpose(3, 2, 0, 1))
  np.testing.assert_array_equal(weights["res3.0.conv2.weight"],
                                params["blocks"]["3"]["convs"]["1"]["kernel"].transpose(3, 2, 0, 1))
  np.testing.assert_array_equal(weights["res3.0.shortcut.norm.running_var"],
                                stats["blocks"]["3"]["shortcut_norm"]["var"])
  np.testing.assert_array_equal(weights["res5.2.conv3.norm.weight"],
                                params["blocks"]["15"]["norms"]["2"]["scale"])
  assert weights["res2.0.conv1.weight"].shape == (4, 4, 1, 1)
  options = json.loads(open(out + ".json").read())["detectron2"]
  assert options["MODEL.RESNETS.STRIDE_IN_1X1"] is False
  assert options["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 16
  assert options["MODEL.PIXEL_MEAN"] == [127.5] * 3 and options["MODEL.PIXEL_STD"] == [63.75] * 3


# Bad requests: one line naming the problem and the fix, before anything is restored.


def test_errors_name_the_problem(trained, tmp_path, monkeypatch):
  with pytest.raises(ValueError, match=r"Unknown --format='onnx'; valid: detectron2, npz, "):
    export.export(trained, "onnx")
  with pytest.raises(ValueError, match=r"--step=5: .* saved steps: \[1, 2\]"):
    export.export(trained, "npz", step=5)
  with pytest.raises(ValueError, match=r"detectron2.*'imagenet' stem and depth 10"):
    export.export(trained, "detectron2")
  with pytest.raises(ValueError, match=r"--heads: detectron2 loads the backbone only"):
    export.export(trained, "detectron2", heads=True)
  with pytest.raises(FileNotFoundError, match=r"config.json not found"):
    export.export(str(tmp_path), "npz")
  storage.write_text(str(tmp_path / "config.json"),
                     open(os.path.join(trained, "config.json")).read())
  with pytest.raises(FileNotFoundError, match=r"No finished checkpoint in .*train the run"):
    export.export(str(tmp_path), "npz")
  assert not (tmp_path / "checkpoints").exists()
  monkeypatch.setitem(sys.modules, "torch", None)  # As if PyTorch were not installed.
  with pytest.raises(ValueError, match=r"--format=torch .* pip install torch torchvision"):
    export.export(trained, "torch")


def test_command_line_on_one_device(trained, tmp_path):
  """The command as documented, in a process with one device (the run used eight)."""
  out = tmp_path / "cli.npz"
  proc = subprocess.run(
      [sys.executable, "-m", "contrastive_jax.export", f"--workdir={trained}", "--format=npz",
       f"--output={out}"], cwd=ROOT, env=helpers.command_env(), capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"Wrote {out}" in proc.stdout
  with np.load(out) as npz:
    np.testing.assert_array_equal(npz["encoder/stem/kernel"],
                                  helpers.read_checkpoint(trained, 2)["params"]["encoder"]
                                  ["stem"]["kernel"])
  proc = subprocess.run(
      [sys.executable, "-m", "contrastive_jax.export", f"--workdir={trained}", "--format=onnx"],
      cwd=ROOT, env=helpers.command_env(), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith("Error: Unknown --format='onnx'"), (
      proc.stderr)
