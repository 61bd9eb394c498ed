"""Knowledge distillation (Hinton et al., 2015) as SimCLRv2 uses it (Chen et al., 2020b, eq. 3).

    L_distill = - sum_x sum_y P^T(y | x; t) log P^S(y | x; t),
    P(y | x; t) = softmax(logits / t),

averaged over the batch here. SimCLRv2 does not multiply by t^2 (Hinton et al. do, to keep
gradient scales comparable across temperatures; at SimCLRv2's t = 1 the two agree). The
teacher's probabilities are constants: no gradient reaches the teacher. A pure function of
arrays; per row, so under `jax.jit` on batch-sharded logits the mean is already global.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, *,
                      temperature: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy of the student's tempered softmax against the teacher's.

  Args:
    student_logits: [n, C] student class scores.
    teacher_logits: [n, C] teacher class scores on the same images.
    temperature: t > 0 of both softmaxes.
  Returns:
    (mean loss, {"teacher_agreement": share of rows whose argmax agree,
                 "teacher_confidence": mean max teacher probability at t,
                 "teacher_entropy": mean entropy of the teacher at t, the loss's floor: the
                 loss minus it is the student's KL divergence from the teacher}).
  """
  if temperature <= 0:
    raise ValueError(f"Distillation temperature must be > 0, got {temperature}.")
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"Student logits {student_logits.shape} and teacher logits "
                     f"{teacher_logits.shape} differ: the two must share their classes.")
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  p_teacher = jax.nn.softmax(t, axis=-1)
  loss = -jnp.mean(jnp.sum(p_teacher * jax.nn.log_softmax(s, axis=-1), axis=-1))
  entropy = -jnp.mean(jnp.sum(p_teacher * jax.nn.log_softmax(t, axis=-1), axis=-1))
  agree = jnp.mean((jnp.argmax(s, -1) == jnp.argmax(t, -1)).astype(jnp.float32))
  return loss, {"teacher_agreement": agree,
                "teacher_confidence": jnp.mean(jnp.max(p_teacher, axis=-1)),
                "teacher_entropy": entropy}
