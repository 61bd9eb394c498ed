"""Evaluators as objects (`common.from_config`): linear probe, kNN, fine-tuning and the
supervised baseline, run by the train loop and by `python -m contrastive_jax.evaluate` alike.
No TensorFlow here."""
