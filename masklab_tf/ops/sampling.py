"""Balanced random sampling of labelled candidates (anchors, RoIs, windows).

Hand-written because the batch and the candidate count N are dynamic (N =
anchors of a run-time image size; the functional training graph has no
static batch) and Model Garden's samplers need them static
(tf-models-official 2.20, checked in a tf.function with unknown shapes):
`BoxSampler` loops over the static batch ("'NoneType' object cannot be
interpreted as an integer"), and its `BalancedPositiveNegativeSampler(
is_static=True)` rejects a dynamic N ("indicator must be static in
shape"). Ranking by uniform noise samples every batch row at once.
"""

from __future__ import annotations

import tensorflow as tf


def sample_labels(positive, negative, sample_size: int,
                  positive_fraction: float, uniform=None):
  """Random subset: <= fraction * size positives, negatives fill the rest.

  Candidates are ranked by uniform noise and the first k of each kind are
  taken, so every candidate of a kind is equally likely to be chosen.

  Args:
    positive, negative: bool [B, N] candidates of each kind (disjoint).
    sample_size: candidates chosen per image.
    positive_fraction: at most this share of them positive.
    uniform: shape -> float32 draws in [0, 1) that rank the candidates
      (default: tf.random.uniform). The samplers' layers pass their own
      generator's, whose state is checkpointed, so that a resumed run draws
      what an uninterrupted one would (docs/reproducibility.md).

  Returns:
    int32 [B, N]: 1 chosen positive, 0 chosen negative, -1 not chosen.
  """
  max_positive = int(sample_size * positive_fraction)
  noise = (uniform or tf.random.uniform)(tf.shape(positive))

  def take(mask, k):
    k = tf.cast(k, tf.int32)
    score = tf.where(mask, noise, -1.0)
    order = tf.argsort(score, axis=1, direction='DESCENDING')
    ranks = tf.argsort(order, axis=1)
    return mask & (ranks < k[:, tf.newaxis])

  num_positive = tf.minimum(
      tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positive)
  chosen_positive = take(positive, num_positive)
  num_negative = sample_size - num_positive
  chosen_negative = take(negative, num_negative)
  return tf.where(chosen_positive, 1, tf.where(chosen_negative, 0, -1))
