"""SimCLR augmentation throughput, three ways, on the CIFAR-10 JPEG folder: tf.data, JAX on the
device, torchvision with a DataLoader. Two views per image, 32 px, the CIFAR recipe (s = 0.5).

  python benchmarks/augment_compare.py --torch_python=/tmp/torchvenv/bin/python --cores=1
  python benchmarks/augment_compare.py --methods=jax --jax_platform=gpu     # GPU: JAX alone

Each measurement runs in a fresh process pinned to `--cores` CPUs (sched_setaffinity, which
TF's, XLA's and PyTorch's thread pools respect; DataLoader workers = cores), so images/s divided
by cores is a per-core figure. Rounds alternate the methods; medians are reported.
  tf          the project's pipeline (data.build_train_iterator, "two_views", cache on: JPEGs
              decoded once, augmentation every epoch); the warm-up covers the first epoch.
  tf_nocache  the same, decoding every JPEG every time.
  jax         raw uint8 batches from data/in_memory.py (numpy shuffle + gather, no TF) ->
              device_put -> jitted ops.augment.two_views, blocked on; on CPU here, so it
              competes for the same cores.
  torch       torchvision.datasets.ImageFolder (PIL decode per sample) + RandomResizedCrop
              (bicubic), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p=0.8, RandomGrayscale(0.2),
              ToTensor, two views, DataLoader(num_workers=cores).
  torch_mem   the same transforms on the decoded uint8 array held in memory (like cache on).
The in-memory array comes from one TF pass over the folder (`--method=prepare`, cached as npz).

At ImageNet resolution (`--preset=imagenet`): synthetic JPEGs of ImageNet's typical size (about
400 x 350, textured so that they compress to ImageNet's 100-odd KB) are written at run time to
`--path` (default /tmp/imagenet_like), and `tf_nocache` and `torch` make two 224 px views with
SimCLR's ImageNet recipe (colour strength 1.0, blur p=0.5 with a kernel of 10% of the side):

  python benchmarks/augment_compare.py --preset=imagenet --methods=tf_nocache,torch --cores=1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
METHODS = ("tf", "tf_nocache", "jax", "torch", "torch_mem")


def _pin(cores: int) -> None:
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


def _config(args, source: str, path: str, cache: bool, on_device: bool):
  import ml_collections  # pylint: disable=g-import-not-at-top

  from contrastive_jax import presets  # pylint: disable=g-import-not-at-top
  preset = "imagenet2012" if args.preset == "imagenet" else "cifar10_folder"
  c = ml_collections.ConfigDict()
  c.data = presets.data_config("cifar10_folder")
  c.data.update(source=source, path=path, cache=cache, image_size=args.image_size)
  c.augment = presets.augment_config(preset)
  c.augment.on_device = on_device
  c.batch_size, c.seed = args.batch_size, 0
  return c


def make_imagenet_like(root: str, n: int) -> None:
  """`n` JPEGs in 10 classes, sides drawn around ImageNet's typical 400 x 350, written once."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  done = os.path.join(root, f".complete_{n}")
  if os.path.exists(done):
    return
  rng = np.random.default_rng(0)
  for i in range(n):
    folder = os.path.join(root, "train", f"class{i % 10}")
    os.makedirs(folder, exist_ok=True)
    w, h = int(rng.integers(330, 500)), int(rng.integers(280, 420))
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((w, h), Image.BICUBIC), np.float32)
    # Texture: without it a JPEG is a few KB and decodes faster than a photo does.
    pixels = np.clip(smooth + rng.normal(0, 14, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)
  open(done, "w").close()


def prepare(args) -> dict:
  """Decodes the train split once (TF) into an npz of uint8 images for jax and torch_mem."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from contrastive_jax.data import in_memory  # pylint: disable=g-import-not-at-top
  if not os.path.exists(args.npz):
    images, labels = in_memory.load_shard(_config(args, "folder", args.path, True, True), 0, 1)
    np.savez(args.npz, images=images, labels=labels)
  return {"npz": args.npz}


def _timed(next_batch, warmup: int, batches: int, batch_size: int) -> tuple[float, float]:
  t0 = time.perf_counter()
  next_batch()
  first = time.perf_counter() - t0
  for _ in range(warmup):
    next_batch()
  t0 = time.perf_counter()
  for _ in range(batches):
    next_batch()
  return batches * batch_size / (time.perf_counter() - t0), first


def measure_tf(args, cache: bool) -> tuple[float, float]:
  from contrastive_jax import data  # pylint: disable=g-import-not-at-top
  config = _config(args, "folder", args.path, cache, False)
  it = data.build_train_iterator(config, "two_views", process_index=0,
                                 process_count=1)
  # With the cache on, the first epoch decodes; time reads from memory after it.
  warmup = -(-50_000 // args.batch_size) + 5 if cache else args.warmup
  return _timed(lambda: next(it), warmup, args.batches, args.batch_size)


def measure_jax(args) -> tuple[float, float]:
  if args.jax_platform:
    os.environ["JAX_PLATFORMS"] = args.jax_platform
  import jax  # pylint: disable=g-import-not-at-top

  from contrastive_jax import data
  from contrastive_jax.ops import augment as augment_device  # pylint: disable=g-import-not-at-top
  config = _config(args, "npz", args.npz, False, True)
  it = data.build_train_iterator(config, "two_views", process_index=0,
                                 process_count=1)
  spec = augment_device.AugmentSpec.from_config(config.augment)
  augment = jax.jit(lambda k, x: augment_device.two_views(k, x, spec, size=args.image_size))
  key = jax.random.key(0)
  step = [0]

  def next_batch():
    images = jax.device_put(next(it)["image"])
    step[0] += 1
    jax.block_until_ready(augment(jax.random.fold_in(key, step[0]), images))
  assert "tensorflow" not in sys.modules
  return _timed(next_batch, args.warmup, args.batches, args.batch_size)


def measure_torch(args, in_memory: bool) -> tuple[float, float]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from torchvision import datasets  # pylint: disable=g-import-not-at-top
  from torchvision import transforms as T  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(1)
  s = 1.0 if args.preset == "imagenet" else 0.5
  # SimCLR blurs ImageNet views (p=0.5, kernel 10% of the side, sigma in [0.1, 2]), not CIFAR's.
  kernel = args.image_size // 10 // 2 * 2 + 1  # 23 at 224 px, as SimCLR.
  blur = ([T.RandomApply([T.GaussianBlur(kernel, (0.1, 2.0))], p=0.5)]
          if args.preset == "imagenet" else [])
  view = T.Compose([
      T.RandomResizedCrop(args.image_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                          interpolation=T.InterpolationMode.BICUBIC),
      T.RandomHorizontalFlip(),
      T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
      T.RandomGrayscale(p=0.2),
      *blur,
      T.ToTensor(),
  ])
  two = lambda img: (view(img), view(img))  # noqa: E731

  if in_memory:
    with np.load(args.npz) as f:
      images, labels = f["images"], f["labels"]

    class Memory(torch.utils.data.Dataset):

      def __len__(self):
        return len(labels)

      def __getitem__(self, i):
        return two(Image.fromarray(images[i])), int(labels[i])
    dataset = Memory()
  else:
    dataset = datasets.ImageFolder(os.path.join(args.path, "train"), transform=two)
  loader = torch.utils.data.DataLoader(
      dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
      num_workers=args.cores, persistent_workers=True,
      worker_init_fn=lambda _: torch.set_num_threads(1))
  it = iter(loader)

  def next_batch():
    nonlocal it
    try:
      next(it)
    except StopIteration:
      it = iter(loader)
      next(it)
  return _timed(next_batch, args.warmup, args.batches, args.batch_size)


def run_one(args) -> dict:
  _pin(args.cores)
  if args.method == "prepare":
    return prepare(args)
  t0 = time.perf_counter()
  if args.method in ("tf", "tf_nocache"):
    ips, first = measure_tf(args, args.method == "tf")
  elif args.method == "jax":
    ips, first = measure_jax(args)
  else:
    ips, first = measure_torch(args, args.method == "torch_mem")
  return {"method": args.method, "cores": len(os.sched_getaffinity(0)), "images_per_s": ips,
          "views_per_s": 2 * ips, "per_core_images_per_s": ips / args.cores,
          "first_batch_s": first, "total_s": time.perf_counter() - t0,
          "load_avg": os.getloadavg()[0]}


def _subprocess(args, method: str) -> dict:
  python = args.torch_python if method.startswith("torch") else sys.executable
  cmd = [python, os.path.abspath(__file__), f"--method={method}", f"--cores={args.cores}",
         f"--path={args.path}", f"--npz={args.npz}", f"--batch_size={args.batch_size}",
         f"--image_size={args.image_size}", f"--warmup={args.warmup}",
         f"--batches={args.batches}", f"--jax_platform={args.jax_platform}",
         f"--preset={args.preset}"]
  env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{method} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
  return json.loads(lines[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--method", default="", help="run one measurement (used by the driver)")
  p.add_argument("--methods", default="tf,jax,torch,torch_mem")
  p.add_argument("--torch_python", default="/tmp/torchvenv/bin/python")
  p.add_argument("--preset", default="cifar10", choices=("cifar10", "imagenet"),
                 help="imagenet: synthetic 400x350 JPEGs, 224 px views, ImageNet recipe")
  p.add_argument("--images", type=int, default=2000, help="synthetic JPEGs (imagenet)")
  p.add_argument("--path", default="")
  p.add_argument("--tarball", default=os.path.join(ROOT, "..", "shared", "data",
                                                     "cifar10-jpeg.tar.gz"))
  p.add_argument("--npz", default="/tmp/perf/cifar10_train_u8.npz")
  p.add_argument("--cores", type=int, default=1)
  p.add_argument("--batch_size", type=int, default=0, help="default 256, imagenet 64")
  p.add_argument("--image_size", type=int, default=0, help="default 32, imagenet 224")
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--batches", type=int, default=30)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--jax_platform", default="cpu", help="'' lets JAX pick (GPU if present)")
  args = p.parse_args()
  imagenet = args.preset == "imagenet"
  args.path = args.path or ("/tmp/imagenet_like" if imagenet else "/tmp/cifar10")
  args.image_size = args.image_size or (224 if imagenet else 32)
  args.batch_size = args.batch_size or (64 if imagenet else 256)
  if args.method:
    print(json.dumps(run_one(args)), flush=True)
    return
  sys.path.insert(0, HERE)
  from augment_throughput import _ensure_folder  # pylint: disable=g-import-not-at-top
  if imagenet:
    make_imagenet_like(args.path, args.images)
  else:
    _ensure_folder(args.path, args.tarball)
  os.makedirs(os.path.dirname(args.npz), exist_ok=True)
  methods = args.methods.split(",")
  if {"jax", "torch_mem"} & set(methods):
    _subprocess(args, "prepare")
  results: dict[str, list[dict]] = {m: [] for m in methods}
  for r in range(args.rounds):
    for m in (methods if r % 2 == 0 else methods[::-1]):
      out = _subprocess(args, m)
      results[m].append(out)
      print(f"round {r} {m:10s} {out['images_per_s']:8,.0f} images/s "
            f"(load {out['load_avg']:.1f})", flush=True)
  med = {m: statistics.median(o["images_per_s"] for o in v) for m, v in results.items()}
  ref = med.get("torch")
  print(f"\n{args.cores} core(s), batch {args.batch_size}, {args.image_size}px, two views, "
        f"{args.batches} timed batches, median of {args.rounds} rounds")
  print("| method | images/s | views/s | images/s per core | vs torchvision (ImageFolder) |")
  print("|---|---:|---:|---:|---:|")
  for m in methods:
    rel = f"{med[m] / ref:.2f}x" if ref else "-"
    print(f"| {m} | {med[m]:,.0f} | {2 * med[m]:,.0f} | {med[m] / args.cores:,.0f} | {rel} |")
  print(json.dumps({"median_images_per_s": med, "rounds": results}))


if __name__ == "__main__":
  main()
