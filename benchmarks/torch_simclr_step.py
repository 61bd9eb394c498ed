"""The SimCLR train step the PyTorch way, for comparison with benchmarks/train_step.py.

Runs in its own environment (never this project's), e.g.
  python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch torchvision numpy
  /tmp/torchvenv/bin/python benchmarks/torch_simclr_step.py --model=resnet18 --image_size=32 \\
      --batch_size=32 --dtype=float32                                  # CPU
  /tmp/torchvenv/bin/python benchmarks/torch_simclr_step.py --model=resnet50 --image_size=224 \\
      --batch_size=256 --dtype=bfloat16 --compile --device=cuda        # GPU

The same work as the JAX step's "simclr" variant: both views through a torchvision ResNet
(channels_last; the 3x3 stride-1 stem without max-pool up to 64 px, as the JAX "cifar" stem;
last BatchNorm of each block zero-initialised; inputs standardised inside the model) as one
batch of 2B, so BatchNorm sees both views; the projection head Linear(2048, no bias)-BN-ReLU-
Linear(128); NT-Xent over the 2B x 2B similarities with temperature 0.1; LARS (momentum 0.9,
trust coefficient 1e-3, weight decay 1e-6, biases and norms excluded) written with foreach ops,
or SGD. bf16 runs under autocast (fp32 parameters), as the JAX step keeps fp32 parameters.
`--compile` wraps the model and loss in torch.compile (slow to compile on CPU).
Prints one JSON line per run, like train_step.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = {"resnet18": 18, "resnet50": 50}


def resnet(name: str, cifar_stem: bool) -> nn.Module:
  import torchvision  # pylint: disable=g-import-not-at-top
  model = getattr(torchvision.models, name)(weights=None, zero_init_residual=True)
  if cifar_stem:
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
  model.fc = nn.Identity()
  return model


class SimCLRNet(nn.Module):

  def __init__(self, name: str, cifar_stem: bool, proj_dims=(2048, 128)):
    super().__init__()
    self.encoder = resnet(name, cifar_stem)
    width = 512 if name == "resnet18" else 2048
    self.head = nn.Sequential(nn.Linear(width, proj_dims[0], bias=False),
                              nn.BatchNorm1d(proj_dims[0]), nn.ReLU(inplace=True),
                              nn.Linear(proj_dims[0], proj_dims[1]))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.head(self.encoder((x - 0.5) / 0.25))


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
  """z: [2B, d], rows b and B + b the two views of image b."""
  z = F.normalize(z.float(), dim=1)
  n = z.shape[0] // 2
  logits = z @ z.T / temperature
  logits.fill_diagonal_(float("-inf"))
  labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
  return F.cross_entropy(logits, labels)


class LARS(torch.optim.Optimizer):
  """LARS as optax.lars: trust ratio on (g + wd * w), then heavy-ball momentum; params with
  ndim <= 1 (biases, norms) get neither decay nor trust ratio. Foreach ops: few kernels."""

  def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 1e-6,
               trust_coefficient: float = 1e-3):
    super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                  trust_coefficient=trust_coefficient))

  @torch.no_grad()
  def step(self, closure=None):
    for group in self.param_groups:
      params = [p for p in group["params"] if p.grad is not None]
      big = [p for p in params if p.ndim > 1]
      small = [p for p in params if p.ndim <= 1]
      updates = {}
      if big:
        grads = [p.grad for p in big]
        d = torch._foreach_add(grads, big, alpha=group["weight_decay"])
        w_norm = torch.stack(torch._foreach_norm(big))
        d_norm = torch.stack(torch._foreach_norm(d))
        ratio = torch.where((w_norm > 0) & (d_norm > 0),
                            group["trust_coefficient"] * w_norm / d_norm,
                            torch.ones_like(w_norm))
        torch._foreach_mul_(d, list(ratio.unbind()))
        updates.update(zip(map(id, big), d))
      for p in small:
        updates[id(p)] = p.grad
      bufs = []
      for p in params:
        state = self.state[p]
        if "momentum" not in state:
          state["momentum"] = torch.zeros_like(p)
        bufs.append(state["momentum"])
      torch._foreach_mul_(bufs, group["momentum"])
      torch._foreach_add_(bufs, [updates[id(p)] for p in params])
      torch._foreach_add_(params, bufs, alpha=-group["lr"])


def run(args: argparse.Namespace) -> dict:
  device = torch.device(args.device)
  torch.manual_seed(0)
  model = SimCLRNet(args.model, args.image_size <= 64).to(device)
  model = model.to(memory_format=torch.channels_last)
  if args.optimizer == "lars":
    opt = LARS(model.parameters(), lr=0.3)
  else:
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9, weight_decay=1e-6)
  shape = (args.batch_size, 3, args.image_size, args.image_size)
  v1 = torch.rand(shape, device=device).contiguous(memory_format=torch.channels_last)
  v2 = torch.rand(shape, device=device).contiguous(memory_format=torch.channels_last)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=args.dtype == "bfloat16")

  def loss_fn(x):
    with autocast:
      z = model(x)
    return nt_xent(z, 0.1)

  if args.compile:
    loss_fn = torch.compile(loss_fn)

  def step():
    x = torch.cat([v1, v2])  # One encoder batch: BatchNorm sees both views.
    loss = loss_fn(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  t0 = time.perf_counter()
  step()
  sync()
  first_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    loss = step()
  sync()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      loss = step()
    sync()
    times.append((time.perf_counter() - t0) / args.steps)
  step_s = statistics.median(times)
  name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
  return {"benchmark": "torch_step", "framework": "torch", "variant": "simclr", "model": args.model,
          "image_size": args.image_size, "batch_size": args.batch_size, "dtype": args.dtype,
          "device": name, "compile": args.compile, "optimizer": args.optimizer,
          "threads": torch.get_num_threads(), "step_s": step_s, "step_s_all": times,
          "images_per_s": args.batch_size / step_s,
          "views_per_s": 2 * args.batch_size / step_s, "first_step_s": first_s,
          "loss": float(loss.detach())}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", choices=sorted(DEPTHS), default="resnet18")
  p.add_argument("--image_size", type=int, default=32)
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
  p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
  p.add_argument("--optimizer", choices=("lars", "sgd"), default="lars")
  p.add_argument("--compile", action="store_true")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--json", default="")
  args = p.parse_args()
  if args.device == "cuda":
    torch.backends.cudnn.benchmark = True
  r = run(args)
  if args.json:
    with open(args.json, "a") as f:
      f.write(json.dumps(r) + "\n")
  print(json.dumps(r), flush=True)


if __name__ == "__main__":
  main()
