"""contrastive_jax: label-efficient visual representation learning in JAX."""
import importlib.metadata as _metadata
import os as _os

# jaxlib 0.10.2's CPU backend miscompiles some reduce fusions ("YNN" fusion; jax-ml/jax#39103):
# jitted reductions such as `b + (a[None] * b).sum(2)[..., None]` return wrong values. Turning
# that fusion off costs little on CPU and does not touch GPU/TPU. The flag is added only for the
# affected release, since XLA rejects flags it does not know. XLA reads XLA_FLAGS when the
# backend starts, i.e. at the first computation, so importing this package first is enough.
_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-reduce"
try:
  if _metadata.version("jaxlib") == "0.10.2" and _YNN_FLAG not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = f"{_os.environ.get('XLA_FLAGS', '')} {_YNN_FLAG}".strip()
except _metadata.PackageNotFoundError:
  pass
