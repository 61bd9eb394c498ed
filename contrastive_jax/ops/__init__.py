"""Array operations the methods and the input pipeline share: device augmentation, patch grids.

The lowest layer of the package: JAX and NumPy only, no model, loss, data or TensorFlow.
"""
