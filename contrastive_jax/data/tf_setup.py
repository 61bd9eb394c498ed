"""Keeps TensorFlow, used for input only, off the accelerators that JAX owns."""


def hide_accelerators_from_tf() -> None:
  """Call before any TF op runs; TF would otherwise reserve GPU memory or claim the TPU.

  Without TensorFlow installed there is nothing to hide: runs that need no tf.data (array
  sources with on-device augmentation) work on machines that have JAX alone.
  """
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):
      pass  # Already initialised, or no such device type in this TF build.
