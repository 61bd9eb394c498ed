"""Knowledge distillation (Hinton et al., 2015) as SimCLRv2 uses it (Chen et al., 2020b, eq. 3).

    L_distill = - sum_x sum_y P^T(y | x; t) log P^S(y | x; t),
    P(y | x; t) = softmax(logits / t),

averaged over the batch here. SimCLRv2 does not multiply by t^2 (Hinton et al. do, to keep
gradient scales comparable across temperatures; at SimCLRv2's t = 1 the two agree). The
teacher's probabilities are constants: no gradient reaches the teacher. Noisy Student's
variants (Xie et al., 2020): hard pseudo-labels, a confidence filter and class balancing. A
pure function of arrays; under `jax.jit` on batch-sharded logits its sums are already global.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array, *,
                      temperature: float, hard: bool = False, min_confidence: float = 0.0,
                      balance: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy of the student's tempered softmax against the teacher's.

  Args:
    student_logits: [n, C] student class scores.
    teacher_logits: [n, C] teacher class scores on the same images (or their clean versions).
    temperature: t > 0 of both softmaxes.
    hard: targets are the teacher's most probable class (one-hot) instead of its probabilities
      (Noisy Student's hard pseudo-labels).
    min_confidence: rows whose teacher's highest probability (at t) is below this are left
      out (Noisy Student's confidence filter); the loss averages over the rows kept.
    balance: weigh the kept rows so that every pseudo-class present in the batch carries the
      same total weight (a per-batch form of Noisy Student's class balancing).
  Returns:
    (loss, {"teacher_agreement": share of rows whose argmax agree,
            "teacher_confidence": mean max teacher probability at t,
            "teacher_entropy": mean entropy of the teacher at t, the loss's floor with soft
              targets on all rows: the loss minus it is the student's KL divergence,
            "kept": share of rows that pass the confidence filter}).
  """
  if temperature <= 0:
    raise ValueError(f"Distillation temperature must be > 0, got {temperature}.")
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(f"Student logits {student_logits.shape} and teacher logits "
                     f"{teacher_logits.shape} differ: the two must share their classes.")
  t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
  s = student_logits.astype(jnp.float32) / temperature
  p_teacher = jax.nn.softmax(t, axis=-1)
  confidence = jnp.max(p_teacher, axis=-1)
  pseudo = jnp.argmax(t, axis=-1)
  targets = jax.nn.one_hot(pseudo, t.shape[-1]) if hard else p_teacher
  per_row = -jnp.sum(targets * jax.nn.log_softmax(s, axis=-1), axis=-1)
  weights = (confidence >= min_confidence).astype(jnp.float32)
  kept = jnp.mean(weights)
  if balance:
    counts = jnp.sum(jax.nn.one_hot(pseudo, t.shape[-1]) * weights[:, None], axis=0)  # [C]
    present = jnp.sum((counts > 0).astype(jnp.float32))
    weights = weights / jnp.maximum(counts[pseudo], 1.0) / jnp.maximum(present, 1.0)
  else:
    weights = weights / jnp.maximum(jnp.sum(weights), 1.0)
  loss = jnp.sum(weights * per_row)
  entropy = -jnp.mean(jnp.sum(p_teacher * jax.nn.log_softmax(t, axis=-1), axis=-1))
  agree = jnp.mean((jnp.argmax(s, -1) == pseudo).astype(jnp.float32))
  return loss, {"teacher_agreement": agree, "teacher_confidence": jnp.mean(confidence),
                "teacher_entropy": entropy, "kept": kept}
