"""ops/sampling.sample_labels: bounded positives, negatives fill the rest,
only candidates chosen, uniform over candidates, dynamic shapes."""

import numpy as np
import tensorflow as tf
import tf_keras

from masklab_tf.ops import sampling


def candidates(rng, batch, num, p_positive, p_negative):
  """Disjoint bool [B, N] positive and negative candidates."""
  kind = rng.choice(3, [batch, num],
                    p=[p_positive, p_negative, 1 - p_positive - p_negative])
  return kind == 0, kind == 1


def check_counts(labels, positive, negative, sample_size, fraction):
  """The documented counts, row by row, in numpy."""
  max_positive = int(sample_size * fraction)
  for row, pos, neg in zip(labels, positive, negative):
    assert set(np.unique(row)) <= {-1, 0, 1}
    # Only candidates of each kind.
    assert pos[row == 1].all() and neg[row == 0].all()
    chosen_pos = min(pos.sum(), max_positive)
    assert (row == 1).sum() == chosen_pos
    assert (row == 0).sum() == min(neg.sum(), sample_size - chosen_pos)


def test_counts_and_kinds_in_every_regime():
  """Rows with plenty of both kinds, too few positives (negatives fill
  in), too few negatives (fewer than sample_size chosen), none of either."""
  rng = np.random.default_rng(0)
  positive, negative = candidates(rng, 4, 200, 0.3, 0.5)
  positive[1, :] = False
  positive[1, :5] = True            # 5 positives: all taken, 27 negatives.
  negative[1, :5] = False
  negative[2, :] = False
  negative[2, 10:13] = True         # 3 negatives.
  positive[2, 10:13] = False
  positive[3, :] = negative[3, :] = False
  labels = sampling.sample_labels(tf.constant(positive),
                                  tf.constant(negative), 32, 0.25).numpy()
  assert labels.dtype == np.int32
  check_counts(labels, positive, negative, 32, 0.25)
  assert (labels[0] == 1).sum() == 8 and (labels[0] == 0).sum() == 24
  assert (labels[1] == 1).sum() == 5 and (labels[1] == 0).sum() == 27
  assert (labels[2] == 0).sum() == 3
  assert (labels[3] == -1).all()


def test_fraction_rounds_down():
  """At most int(fraction * size) positives (10 * 0.35 -> 3)."""
  positive = tf.constant([[True] * 20 + [False] * 20])
  labels = sampling.sample_labels(positive, ~positive, 10, 0.35).numpy()
  assert (labels == 1).sum() == 3 and (labels == 0).sum() == 7


def test_every_candidate_equally_likely():
  """Over 400 draws of 5 positives out of 20 and 15 negatives out of 60,
  each candidate's selection count is binomial(400, 1/4); a chi-square
  over the candidates of each kind stays far below a bound that a uniform
  sampler passes with probability 1 - 1e-9 (fixed global seed: the draws
  are the same on every run)."""
  tf_keras.utils.set_random_seed(7)
  draws, num_pos, num_neg = 400, 20, 60
  positive = np.zeros([draws, 100], bool)
  negative = np.zeros([draws, 100], bool)
  positive[:, 3:3 + num_pos] = True      # candidates away from index 0
  negative[:, 40:40 + num_neg] = True
  labels = sampling.sample_labels(tf.constant(positive),
                                  tf.constant(negative), 20, 0.25,
                                  lambda shape: tf.random.stateless_uniform(
                                      shape, [3, 0])).numpy()
  for kind, mask, value in (('positive', positive[0], 1),
                            ('negative', negative[0], 0)):
    counts = (labels[:, mask] == value).sum(axis=0)
    expected = draws * (labels[0] == value).sum() / mask.sum()
    assert expected == 100
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # About 0.75 x chi-square with 19 / 59 degrees of freedom (mean 14 /
    # 44); P(> 75) and P(> 150) are below 1e-9. A sampler favouring one
    # half of the candidates 60 : 40 scores 4 N (80 / 240); one that takes
    # the first k scores 300 N.
    bound = {'positive': 75, 'negative': 150}[kind]
    assert chi2 < bound, (kind, chi2, counts)
    assert counts.min() > 50 and counts.max() < 160, (kind, counts)


def test_dynamic_batch_and_candidates_in_a_tf_function():
  """Unknown batch and N at trace time; one trace serves several shapes."""
  sample = tf.function(
      lambda p, n: sampling.sample_labels(p, n, 6, 0.5),
      input_signature=[tf.TensorSpec([None, None], tf.bool)] * 2)
  rng = np.random.default_rng(1)
  for batch, num in ((1, 9), (3, 40), (2, 4)):
    positive, negative = candidates(rng, batch, num, 0.4, 0.4)
    labels = sample(positive, negative).numpy()
    assert labels.shape == (batch, num)
    check_counts(labels, positive, negative, 6, 0.5)
  assert sample.experimental_get_tracing_count() == 1
