"""Command line: a run's encoder written for other frameworks (docs/export.md).

  python -m contrastive_jax.export --workdir=runs/<run> [--step=N] \\
      --format=npz|safetensors|torch|detectron2 [--heads] [--output=PATH]

npz and safetensors hold the checkpoint's arrays unchanged (Flax layout) under '/'-joined
names ("encoder/stem/kernel"; with --heads also "head/layers/0/kernel", ...), for every encoder
the model factory builds; torch is a state dict that torchvision's ResNet loads with strict=True
(--heads: <output>.heads.pt); detectron2 is a pickle in the names of its ResNet backbone. Those
two hold models/resnet.py's ResNet only (not the wide ResNet, not the pre-activation trunks).
Every format also writes <output>.json: the architecture, the input normalisation (the encoder
standardises [0, 1] images inside; other frameworks must do it), the step. Default output:
<workdir>/export/encoder_step_<N>.<ext>.

The run's config.json decides the architecture through the model code itself, and the
checkpoint is read onto one device into shapes built from it, so a work directory copied to a
machine with other devices exports as well; the training data is not opened (except for a
supervised run whose class count comes from its dataset).

Exit status: 0 when done, 1 on errors; an expected error prints one line, `Error: <message>`
(CONTRASTIVE_JAX_DEBUG=1 shows its traceback).
"""
from __future__ import annotations

import dataclasses
import io
import json
import pickle
import struct
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging
from flax import nnx

from contrastive_jax import checkpointing, data, optim, parallel, runs, storage
from contrastive_jax import step as step_lib
from contrastive_jax.methods import get_method
from contrastive_jax.models import resnet

FORMATS = {"npz": ".npz", "safetensors": ".safetensors", "torch": ".pt", "detectron2": ".pkl"}
# The formats in another framework's ResNet layout, which only models/resnet.ResNet maps onto.
RESNET_LAYOUTS = {"torch": "torchvision's ResNet", "detectron2": "detectron2's ResNet backbone"}
# What every encoder's feature_map does to its [0, 1] input first; other frameworks must do it.
INPUT_MEAN, INPUT_STD = 0.5, 0.25
TORCH_INSTALL = ("pip install torch torchvision (CPU-only wheels: add --index-url "
                 "https://download.pytorch.org/whl/cpu)")
_NORMS = {nnx.BatchNorm: "batch", nnx.LayerNorm: "layer", nnx.GroupNorm: "group"}
# Flax leaf -> PyTorch leaf of a normalisation layer.
_NORM_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
# torchvision's resnet<N> builders and detectron2's MODEL.RESNETS.DEPTH: these depths only.
_STANDARD_DEPTHS = (18, 34, 50, 101, 152)
_DETECTRON2_NORMS = {"batch": "FrozenBN", "layer": "LN", "group": "GN"}


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The encoder as another framework rebuilds it (written to the metadata JSON)."""
  depth: int
  width: float
  stem: str  # "cifar": 3x3 stride 1, no max-pool; "imagenet": 7x7 stride 2 + 3x3 max-pool.
  norm: str  # "batch", "layer" (over channels at each position) or "group".
  epsilon: float
  block: str  # "basic" or "bottleneck" (stride on the 3x3, ResNet v1.5).
  stage_blocks: tuple[int, ...]
  stem_width: int  # Output channels of the stem; stage s has stem_width * 2**s (x4 bottleneck).
  out_features: int


@dataclasses.dataclass(frozen=True)
class Trunk:
  """Any other encoder (the wide ResNet, the pre-activation trunks): the config.model keys that
  rebuild it with models/factory.py, and what it was built with. npz and safetensors only."""
  arch: str  # config.model.arch.
  model: str  # The class that config.model.arch builds.
  depth: int
  width: float
  stem: str
  norm: str  # As built: CPC v2 overrides config.model.norm with config.cpc.norm.
  epsilon: float
  stem_width: int
  out_features: int


@dataclasses.dataclass
class Encoder:
  """One checkpoint's encoder: architecture, flat arrays (Flax layout) and the rest."""
  workdir: str
  step: int
  method: str
  arch: Architecture | Trunk
  arrays: dict[str, np.ndarray]  # Path inside the encoder ("stem/kernel") -> array.
  heads: dict[str, np.ndarray]  # Path inside the model of everything else.


def _flat(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {prefix + jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(x)
          for p, x in leaves}


def _subtree(node: Any, path: str) -> Any:
  for key in path.split("/"):
    node = node.get(key, {}) if isinstance(node, dict) else getattr(node, key)
  return node


def _architecture(config: Any, encoder: Any) -> Architecture | Trunk:
  if not isinstance(encoder, resnet.ResNet):
    norm = next(m for _, m in nnx.iter_modules(encoder) if type(m) in _NORMS)
    return Trunk(arch=str(config.model.get("arch", "resnet")),
                 model=f"{type(encoder).__module__}.{type(encoder).__qualname__}",
                 depth=int(config.model.depth), width=float(config.model.width),
                 stem=getattr(encoder, "stem_kind", config.model.stem), norm=_NORMS[type(norm)],
                 epsilon=float(norm.epsilon), stem_width=int(encoder.stem.out_features),
                 out_features=int(encoder.out_features))
  depth = int(config.model.depth)
  block, counts = resnet.STAGES[depth]
  norm = _NORMS[type(encoder.stem_norm)]
  return Architecture(depth=depth, width=float(config.model.width), stem=encoder.stem_kind,
                      norm=norm, epsilon=float(encoder.stem_norm.epsilon), block=block,
                      stage_blocks=tuple(counts), stem_width=int(encoder.stem.out_features),
                      out_features=int(encoder.out_features))


def _method_and_model(config: Any) -> tuple[Any, Any]:
  """The run's method and its model built abstractly (shapes only)."""
  build = lambda m: nnx.eval_shape(lambda: m.build_model(nnx.Rngs(0)))  # noqa: E731
  method = get_method(config)
  try:
    return method, build(method)
  except ValueError as error:
    # A supervised run may take its class count from the dataset: only then open it.
    try:
      method = get_method(config, data.dataset_info(config))
    except Exception:  # pylint: disable=broad-except
      raise error from None  # No dataset here either: the model's own error says more.
    return method, build(method)


def load(workdir: str, step: int = -1, fmt: str | None = None) -> Encoder:
  """The encoder of `workdir`'s checkpoint `step` (-1: the latest); raises before restoring
  anything if format `fmt` cannot hold its architecture."""
  config = runs.load_config(workdir)
  ckpt_dir = storage.join(workdir, "checkpoints")
  # Checked first: opening a Checkpointer would create the directory.
  ckpt = (checkpointing.Checkpointer(ckpt_dir, max_to_keep=1_000_000, async_save=False)
          if storage.path(ckpt_dir).is_dir() else None)
  steps = ckpt.all_steps() if ckpt else []
  if not steps:
    raise FileNotFoundError(f"No finished checkpoint in {ckpt_dir}: train the run first "
                            "(python -m contrastive_jax.main --workdir=...) or point --workdir "
                            "at a run that has saved one.")
  chosen = steps[-1] if step < 0 else step
  if chosen not in steps:
    raise ValueError(f"--step={step}: {workdir} has no checkpoint at that step; saved steps: "
                     f"{steps} (leave --step out for the latest).")
  method, model = _method_and_model(config)
  path = method.encoder_path
  arch = _architecture(config, _subtree(model, path))
  if fmt in RESNET_LAYOUTS and isinstance(arch, Trunk):
    raise ValueError(f"--format={fmt} writes {RESNET_LAYOUTS[fmt]} layout; this run's encoder "
                     f"is model.arch={arch.arch!r}; use --format=npz or safetensors.")
  if fmt == "detectron2":
    _check_detectron2(arch)
  if fmt == "torch":
    _import_torch()  # After the layout checks: installing PyTorch cannot help those.
  tx, _ = optim.build_optimizer(config.optim, config.batch_size, 1)
  # The optimiser state only needs the right structure. Every array is read onto one device,
  # whatever devices wrote the checkpoint (orbax would otherwise want the writer's topology).
  mesh = parallel.make_mesh(1)
  on_one_device = parallel.replicated(mesh)
  target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=on_one_device),
                        jax.eval_shape(step_lib.make_init_fn(method, tx, mesh), config.seed))
  try:
    state = ckpt.restore(target, chosen)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"The checkpoint at step {chosen} in {ckpt_dir} does not match the model "
                     f"that {storage.join(workdir, 'config.json')} builds; was config.json "
                     f"edited? Restore error: {' '.join(str(e).split())[:400]}") from e
  finally:
    ckpt.close()
  # What the evaluators measure: the trained weights, or the average a method keeps (FixMatch).
  params, batch_stats = method.eval_variables(state.params, state.batch_stats, state.extra)
  arrays = _flat(_subtree(params, path))
  stats = _flat(_subtree(batch_stats, path))
  if set(arrays) & set(stats):
    raise ValueError(f"Parameters and statistics share names: {sorted(set(arrays) & set(stats))}")
  arrays.update(stats)
  rest = {**_flat(params), **_flat(batch_stats)}
  heads = {k: v for k, v in rest.items() if not k.startswith(path + "/")}
  return Encoder(workdir=workdir, step=int(chosen), method=config.method, arch=arch,
                 arrays=arrays, heads=heads)


# Names in other frameworks.


def module_names(arch: Architecture) -> dict[str, tuple[str, str]]:
  """Encoder module path -> (torchvision module name, detectron2 module name)."""
  names = {"stem": ("conv1", "stem.conv1"), "stem_norm": ("bn1", "stem.conv1.norm")}
  convs = 3 if arch.block == "bottleneck" else 2
  i = 0
  for stage, count in enumerate(arch.stage_blocks):
    for b in range(count):
      tv, d2 = f"layer{stage + 1}.{b}", f"res{stage + 2}.{b}"
      for j in range(convs):
        names[f"blocks/{i}/convs/{j}"] = (f"{tv}.conv{j + 1}", f"{d2}.conv{j + 1}")
        names[f"blocks/{i}/norms/{j}"] = (f"{tv}.bn{j + 1}", f"{d2}.conv{j + 1}.norm")
      names[f"blocks/{i}/shortcut"] = (f"{tv}.downsample.0", f"{d2}.shortcut")
      names[f"blocks/{i}/shortcut_norm"] = (f"{tv}.downsample.1", f"{d2}.shortcut.norm")
      i += 1
  return names


def _torch_layout(leaf: str, x: np.ndarray) -> tuple[str, np.ndarray]:
  """A Flax leaf's PyTorch name and layout: kernels [..., in, out] -> [out, in, ...]."""
  if leaf == "kernel":
    x = np.asarray(x, np.float32)
    return "weight", np.ascontiguousarray(np.transpose(x, (x.ndim - 1, x.ndim - 2,
                                                           *range(x.ndim - 2))))
  if leaf not in _NORM_LEAVES:
    raise ValueError(f"No PyTorch name for the parameter {leaf!r}.")
  return _NORM_LEAVES[leaf], np.asarray(x, np.float32)


def renamed(enc: Encoder, framework: str) -> dict[str, np.ndarray]:
  """The encoder under torchvision's ("torch") or detectron2's names, in PyTorch's layout.
  torch adds BatchNorm's num_batches_tracked (the checkpoint's step), which strict loading
  needs and detectron2's FrozenBN does not have."""
  names = module_names(enc.arch)
  out = {}
  for path, x in enc.arrays.items():
    module, leaf = path.rsplit("/", 1)
    if module not in names:
      raise ValueError(f"No {framework} name for the encoder parameter {path!r}.")
    name = names[module][0 if framework == "torch" else 1]
    key, value = _torch_layout(leaf, x)
    out[f"{name}.{key}"] = value
    if framework == "torch" and leaf == "mean":
      out[f"{name}.num_batches_tracked"] = np.asarray(enc.step, np.int64)
  return out


def torch_heads(enc: Encoder) -> dict[str, np.ndarray]:
  """Heads under their module paths with '.' (head.layers.0.weight), in PyTorch's layout."""
  out = {}
  for path, x in enc.heads.items():
    module, leaf = path.rsplit("/", 1)
    key, value = _torch_layout(leaf, x)
    out[f"{module.replace('/', '.')}.{key}"] = value
    if leaf == "mean":
      out[f"{module.replace('/', '.')}.num_batches_tracked"] = np.asarray(enc.step, np.int64)
  return out


# File formats.

_SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
                       "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
                       "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8",
                       "bool": "BOOL"}


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
  """The safetensors format: u64 little-endian header size, JSON header (name -> dtype, shape,
  [begin, end) byte offsets into the data), then the arrays' little-endian bytes back to back."""
  header: dict[str, Any] = {"__metadata__": metadata}
  chunks, offset = [], 0
  for name, x in arrays.items():
    x = np.ascontiguousarray(x)
    if x.dtype.name not in _SAFETENSORS_DTYPES:
      raise ValueError(f"safetensors has no dtype for {name!r} ({x.dtype}).")
    raw = x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes()
    header[name] = {"dtype": _SAFETENSORS_DTYPES[x.dtype.name], "shape": list(x.shape),
                    "data_offsets": [offset, offset + len(raw)]}
    chunks.append(raw)
    offset += len(raw)
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)  # The data starts 8-byte aligned, as the reference writer does.
  return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def _import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError(f"--format=torch writes its file with PyTorch, which is not installed: "
                     f"{TORCH_INSTALL}.") from None
  return torch


def _torch_bytes(arrays: dict[str, np.ndarray]) -> bytes:
  torch = _import_torch()
  buffer = io.BytesIO()
  torch.save({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, buffer)
  return buffer.getvalue()


def metadata(enc: Encoder, fmt: str, heads: bool = False) -> dict[str, Any]:
  """What a reader needs besides the arrays (written to <output>.json)."""
  a = enc.arch
  meta: dict[str, Any] = {
      "format": fmt, "workdir": enc.workdir, "step": enc.step, "method": enc.method,
      "architecture": dataclasses.asdict(a),
      "input": {"layout": "NHWC" if fmt in ("npz", "safetensors") else "NCHW",
                "channels": "RGB", "range": [0.0, 1.0], "mean": [INPUT_MEAN] * 3,
                "std": [INPUT_STD] * 3,
                "note": "The encoder standardises inside; other frameworks must feed "
                        "(x - mean) / std of [0, 1] images."},
      "padding": "XLA 'SAME': a strided convolution or max-pool pads the odd pixel at the "
                 "end (bottom/right), where PyTorch pads both sides alike (docs/export.md).",
      "heads": sorted({k.split("/")[0] for k in enc.heads}) if heads else [],
  }
  if isinstance(a, Trunk):
    meta["formats"] = (f"npz and safetensors only: torch and detectron2 write post-activation "
                       f"ResNet layouts (models/resnet.py), which model.arch={a.arch!r} is not.")
  if fmt == "torch":
    meta["torchvision"] = {
        "block": "Bottleneck" if a.block == "bottleneck" else "BasicBlock",
        "layers": list(a.stage_blocks),
        "stock": (f"resnet{a.depth}" if a.stem == "imagenet" and a.stem_width == 64
                  and a.norm == "batch" and a.depth in _STANDARD_DEPTHS else None)}
  if fmt == "detectron2":
    meta["detectron2"] = detectron2_options(a)
  return meta


def detectron2_options(a: Architecture) -> dict[str, Any]:
  """detectron2 config keys that build this encoder's backbone and feed it our normalisation
  (detectron2 feeds 0-255 pixels: (x / 255 - 0.5) / 0.25 = (x - 127.5) / 63.75)."""
  bottleneck = a.block == "bottleneck"
  return {"MODEL.RESNETS.DEPTH": a.depth, "MODEL.RESNETS.STRIDE_IN_1X1": False,
          "MODEL.RESNETS.NORM": _DETECTRON2_NORMS[a.norm],
          "MODEL.RESNETS.STEM_OUT_CHANNELS": a.stem_width,
          "MODEL.RESNETS.WIDTH_PER_GROUP": a.stem_width,
          "MODEL.RESNETS.RES2_OUT_CHANNELS": a.stem_width * (4 if bottleneck else 1),
          "MODEL.PIXEL_MEAN": [255 * INPUT_MEAN] * 3, "MODEL.PIXEL_STD": [255 * INPUT_STD] * 3,
          "INPUT.FORMAT": "RGB"}


def _check_request(fmt: str, heads: bool) -> None:
  """Flag errors found before anything is read."""
  if fmt not in FORMATS:
    raise ValueError(f"Unknown --format={fmt!r}; valid: {', '.join(sorted(FORMATS))}.")
  if heads and fmt == "detectron2":
    raise ValueError("--heads: detectron2 loads the backbone only; export the heads with "
                     "--format=npz, safetensors or torch.")


def _check_detectron2(a: Architecture) -> None:
  if a.stem != "imagenet" or a.depth not in _STANDARD_DEPTHS:
    raise ValueError(f"--format=detectron2: detectron2's ResNet has a 7x7 stride-2 stem and "
                     f"depths {_STANDARD_DEPTHS}; this encoder has the {a.stem!r} stem and "
                     f"depth {a.depth}. Export it with --format=torch or npz instead.")
  if a.block == "basic" and a.stem_width != 64:
    raise ValueError(f"--format=detectron2: detectron2's R18/R34 have 64 stem channels; this "
                     f"encoder has width {a.width} ({a.stem_width} channels). Export it with "
                     "--format=torch or npz instead.")


def export(workdir: str, fmt: str, *, step: int = -1, heads: bool = False,
           output: str | None = None) -> list[str]:
  """Writes the encoder of `workdir` at `step` (-1: latest) as `fmt`; returns the files."""
  _check_request(fmt, heads)
  enc = load(workdir, step, fmt)
  output = output or storage.join(workdir, "export", f"encoder_step_{enc.step}{FORMATS[fmt]}")
  meta = metadata(enc, fmt, heads)
  flat = {f"encoder/{k}": v for k, v in enc.arrays.items()}
  if heads:
    flat.update(enc.heads)
  files = [output, output + ".json"]
  if fmt == "npz":
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    blob = buffer.getvalue()
  elif fmt == "safetensors":
    blob = safetensors_bytes(flat, {"contrastive_jax": json.dumps(meta)})
  elif fmt == "torch":
    blob = _torch_bytes(renamed(enc, "torch"))
    if heads:
      storage.write_bytes(output + ".heads.pt", _torch_bytes(torch_heads(enc)))
      files.append(output + ".heads.pt")
  else:
    blob = pickle.dumps({"model": renamed(enc, "detectron2"), "__author__": "contrastive_jax",
                         "matching_heuristics": True})
  storage.write_bytes(output, blob)
  storage.write_json(output + ".json", meta)
  return files


def _summary(files: list[str], fmt: str) -> str:
  lines = [f"Wrote {f}" for f in files]
  if fmt == "torch":
    lines.append("Load it with the builder in docs/export.md (torchvision ResNet, XLA padding); "
                 "feed it (x - 0.5) / 0.25 of RGB images in [0, 1].")
  if fmt == "detectron2":
    opts = json.load(storage.path(files[1]).open())["detectron2"]
    lines.append("detectron2 options: MODEL.WEIGHTS " + files[0] + " " + " ".join(
        f"{k} {json.dumps(v).replace(' ', '')}" for k, v in opts.items()))
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags() -> None:
  # Defined only when this module runs as the command: imported as a library (tests, a
  # notebook) it adds no flags that could clash with main.py's or evaluate.py's.
  flags.DEFINE_string("workdir", None, "Work directory of the run to export.")
  flags.DEFINE_integer("step", -1, "Checkpoint step to export (-1: the latest).")
  flags.DEFINE_string("format", "npz", f"One of {', '.join(sorted(FORMATS))}.")
  flags.DEFINE_bool("heads", False, "Also export the projection/prediction heads (npz, "
                    "safetensors, torch).")
  flags.DEFINE_string("output", None, "File to write (default "
                      "<workdir>/export/encoder_step_<N>.<ext>); metadata goes to "
                      "<output>.json.")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from contrastive_jax import cli  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it opens at INFO.
  with cli.errors_reported():
    files = export(FLAGS.workdir, FLAGS.format, step=FLAGS.step, heads=FLAGS.heads,
                   output=FLAGS.output)
    print(_summary(files, FLAGS.format))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
