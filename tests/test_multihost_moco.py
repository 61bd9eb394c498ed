"""MoCo v2 over 2 processes x 4 devices (gloo on localhost) trains like 1 process x 8 devices:
the queue, its pointer and the key encoder included. Launched as tests/test_multihost.py
launches SimCLR, through the real entry point and launcher."""
import json
import os

import jax
import numpy as np
import pytest

from contrastive_jax import checkpointing
from tests.test_end_to_end import ROOT
from tests.test_multihost import _launch, _reference

pytestmark = pytest.mark.slow


def test_moco_v2_queue_and_target_with_two_processes(tmp_path):
  """MoCo v2's queue, its pointer and the key encoder after 3 steps of 2 processes x 4 devices
  equal those of 1 process x 8 devices: keys from every process are enqueued, in order."""
  config = os.path.join(ROOT, "configs", "moco_v2.py")
  extra = ("--config.model.depth=10", "--config.evals.knn.every_steps=0")
  workdir = tmp_path / "moco"
  _launch(workdir, 3, tmp_path / "logs", config=f"{config}:tiny", extra=extra)
  ref_state, ref_losses = _reference(3, config, extra)
  results = json.loads((workdir / "results.json").read_text())
  np.testing.assert_allclose(results["train"]["loss"], ref_losses[-1], rtol=1e-5)
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"))
  restored = ckpt.restore(ref_state, step=3)
  ckpt.close()
  assert int(restored.extra["queue_ptr"]) == int(ref_state.extra["queue_ptr"]) == 3 * 16
  for tree in ("extra", "params"):
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(getattr(ref_state, tree)),
                                 jax.tree.leaves(getattr(restored, tree))):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5,
                                 err_msg=f"{tree}{jax.tree_util.keystr(path)}")
