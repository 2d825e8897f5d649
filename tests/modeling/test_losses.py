"""modeling/losses.py's free functions against numpy models of the losses.

Each numpy model below is written from the losses' documented conventions
(float64, no TensorFlow), so a changed mask, target encoding, threshold or
normaliser shows up as a value mismatch. The mirrored check runs in a fresh
process: logical CPUs must be set up before TensorFlow initialises its
devices, which this pytest process may long have done.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf

from masklab_tf.modeling import losses
from masklab_tf.ops import boxes as box_conventions
from masklab_tf.ops import label_values

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def sigmoid_ce_np(logits, labels):
  """Numerically stable sigmoid cross-entropy, float64."""
  x = np.asarray(logits, np.float64)
  z = np.asarray(labels, np.float64)
  return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def softmax_ce_np(logits, labels):
  """Sparse softmax cross-entropy over the last axis, float64."""
  x = np.asarray(logits, np.float64)
  x = x - x.max(axis=-1, keepdims=True)
  log_probs = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
  return -np.take_along_axis(log_probs, np.asarray(labels)[..., None],
                             axis=-1)[..., 0]


def huber_np(x):
  """Smooth L1 (Huber at delta 1)."""
  x = np.abs(np.asarray(x, np.float64))
  return np.where(x < 1.0, 0.5 * x * x, x - 0.5)


def encode_np(boxes, anchors, weights):
  """Faster R-CNN box encoding: centre offsets over the anchor's size and
  log size ratios, each times its weight (Model Garden's encode_boxes
  without its 1e-8 epsilon)."""
  boxes = np.asarray(boxes, np.float64)
  anchors = np.asarray(anchors, np.float64)
  h, w = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
  ah, aw = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
  yc, xc = boxes[..., 0] + h / 2, boxes[..., 1] + w / 2
  ayc, axc = anchors[..., 0] + ah / 2, anchors[..., 1] + aw / 2
  wy, wx, wh, ww = weights
  return np.stack([(yc - ayc) / ah * wy, (xc - axc) / aw * wx,
                   np.log(h / ah) * wh, np.log(w / aw) * ww], axis=-1)


def random_boxes(rng, shape, low=0.0, high=60.0, min_side=4.0):
  """Boxes [*shape, 4] with sides of at least min_side."""
  corner = rng.uniform(low, high, shape + (2,))
  sides = rng.uniform(min_side, 30.0, shape + (2,))
  return np.concatenate([corner, corner + sides], axis=-1).astype(np.float32)


def nearby_boxes(rng, boxes):
  """Boxes near `boxes`: centres moved by up to a quarter side and sides
  scaled by 0.6..1.6, so that encoded targets are of order 1 (both sides
  of the Huber kink) and every box stays a proper box."""
  size = boxes[..., 2:] - boxes[..., :2]
  centre = boxes[..., :2] + size / 2 + rng.uniform(-0.25, 0.25,
                                                   size.shape) * size
  size = size * rng.uniform(0.6, 1.6, size.shape)
  return np.concatenate([centre - size / 2, centre + size / 2],
                        axis=-1).astype(np.float32)


def test_rpn_losses_match_numpy():
  """Sigmoid CE over sampled anchors only (-1 skipped), Huber on the
  positives' deltas, both divided by the number of sampled anchors."""
  rng = np.random.default_rng(0)
  batch, h, w, a = 2, 3, 4, 3
  scores = rng.normal(0, 2, [batch, h, w, a]).astype(np.float32)
  # Deltas spread over both sides of the Huber kink at 1.
  deltas = rng.normal(0, 1.5, [batch, h, w, 4 * a]).astype(np.float32)
  labels = rng.choice([-1, 0, 1], [batch, h * w * a], p=[0.5, 0.3, 0.2])
  labels = labels.astype(np.int32)
  targets = rng.normal(0, 1.5, [batch, h * w * a, 4]).astype(np.float32)

  score_loss, box_loss = losses.rpn_losses(
      tf.constant(scores), tf.constant(deltas), tf.constant(labels),
      tf.constant(targets))

  flat_scores = scores.reshape(batch, -1)
  flat_deltas = deltas.reshape(batch, -1, 4)
  sampled = labels >= 0
  positive = labels == 1
  num_sampled = sampled.sum()
  assert 0 < positive.sum() < num_sampled < labels.size
  expected_score = (sigmoid_ce_np(flat_scores, positive)[sampled].sum() /
                    num_sampled)
  expected_box = (huber_np(flat_deltas - targets)[positive].sum() /
                  num_sampled)
  np.testing.assert_allclose(float(score_loss), expected_score, rtol=1e-5)
  np.testing.assert_allclose(float(box_loss), expected_box, rtol=1e-5)


def test_rpn_losses_nothing_sampled_is_zero():
  """With no sampled anchor both losses are 0 (not 0 / 0)."""
  score_loss, box_loss = losses.rpn_losses(
      tf.ones([1, 2, 2, 1]), tf.ones([1, 2, 2, 4]),
      -tf.ones([1, 4], tf.int32), tf.zeros([1, 4, 4]))
  assert float(score_loss) == 0.0
  assert float(box_loss) == 0.0


def test_box_classifier_losses_match_numpy():
  """Softmax CE over used RoIs (class -1 skipped); Huber on the true
  class's 4 deltas of foreground RoIs against the (10, 10, 5, 5) encoding
  of the matched box in the RoI; both divided by the number of used RoIs."""
  # Faster R-CNN's weights (TF Object Detection API's FasterRcnnBoxCoder).
  assert tuple(box_conventions.BOX_CODER_WEIGHTS) == (10.0, 10.0, 5.0, 5.0)
  rng = np.random.default_rng(1)
  batch, num, k = 2, 6, 3
  logits = rng.normal(0, 2, [batch, num, k + 1]).astype(np.float32)
  deltas = rng.normal(0, 1.5, [batch, num, 4 * (k + 1)]).astype(np.float32)
  rois = random_boxes(rng, (batch, num))
  matched = nearby_boxes(rng, rois)
  classes = np.array([[2, 0, -1, 3, 1, 0], [0, -1, -1, 1, 3, 2]], np.int32)

  class_loss, box_loss = losses.box_classifier_losses(
      tf.constant(logits), tf.constant(deltas), tf.constant(rois),
      tf.constant(matched), tf.constant(classes))

  used = classes >= 0
  foreground = classes > 0
  ce = softmax_ce_np(logits, np.maximum(classes, 0))
  expected_class = ce[used].sum() / used.sum()
  per_class = deltas.reshape(batch, num, k + 1, 4)
  true_deltas = np.take_along_axis(
      per_class, np.maximum(classes, 0)[..., None, None], axis=2)[:, :, 0]
  targets = encode_np(matched, rois, box_conventions.BOX_CODER_WEIGHTS)
  expected_box = (huber_np(true_deltas - targets)[foreground].sum() /
                  used.sum())
  np.testing.assert_allclose(float(class_loss), expected_class, rtol=1e-5)
  np.testing.assert_allclose(float(box_loss), expected_box, rtol=1e-4)


def test_box_classifier_box_loss_zero_when_deltas_are_the_encoding():
  """The loss's encoding is exactly encode_np with BOX_CODER_WEIGHTS: the
  true class's deltas set to it give a zero box loss, another class's
  deltas (the background's here) are not read."""
  rng = np.random.default_rng(2)
  rois = random_boxes(rng, (1, 3))
  matched = nearby_boxes(rng, rois)
  classes = np.array([[1, 2, 1]], np.int32)
  deltas = rng.normal(0, 5, [1, 3, 3, 4]).astype(np.float32)
  targets = encode_np(matched, rois, box_conventions.BOX_CODER_WEIGHTS)
  for i, c in enumerate(classes[0]):
    deltas[0, i, c] = targets[0, i]
  _, box_loss = losses.box_classifier_losses(
      tf.zeros([1, 3, 3]), tf.constant(deltas.reshape(1, 3, 12)),
      tf.constant(rois), tf.constant(matched), tf.constant(classes))
  assert abs(float(box_loss)) < 1e-6


def test_mask_loss_matches_numpy():
  """Per-pixel sigmoid CE against targets binarised at 0.5 (0.5 itself is
  foreground), over instances of class > 0 only, divided by their pixels."""
  rng = np.random.default_rng(3)
  batch, m, s = 2, 4, 5
  logits = rng.normal(0, 2, [batch, m, s, s]).astype(np.float32)
  targets = rng.uniform(0, 1, [batch, m, s, s]).astype(np.float32)
  targets[0, 0, 0, :3] = [0.5, 0.49, 0.51]
  classes = np.array([[1, 0, 3, -1], [2, 2, -1, -1]], np.int32)

  loss = losses.mask_loss(tf.constant(logits), tf.constant(targets),
                          tf.constant(classes))

  valid = classes > 0
  ce = sigmoid_ce_np(logits, targets >= 0.5)
  expected = ce[valid].sum() / (valid.sum() * s * s)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_labels_at_stride_reads_cell_centre_pixels():
  """Cell (i, j) of a stride-s map reads pixel (i s + s // 2, j s + s // 2),
  for an even and an odd stride and sides that are not multiples of s."""
  labels = np.arange(2 * 13 * 17).reshape(2, 13, 17).astype(np.int32)
  for stride in (4, 3):
    got = losses.labels_at_stride(tf.constant(labels), stride).numpy()
    rows = [i * stride + stride // 2 for i in range(13)
            if i * stride + stride // 2 < 13]
    cols = [j * stride + stride // 2 for j in range(17)
            if j * stride + stride // 2 < 17]
    np.testing.assert_array_equal(got, labels[:, rows][:, :, cols])


def test_dense_softmax_loss_matches_numpy_and_skips_ignore_label():
  """Softmax CE averaged over pixels whose label is not IGNORE_LABEL;
  labels larger than the logits are cropped to them."""
  rng = np.random.default_rng(4)
  batch, h, w, c = 2, 3, 5, 4
  logits = rng.normal(0, 2, [batch, h, w, c]).astype(np.float32)
  # One row and column more than the logits: cropped away.
  labels = rng.integers(0, c, [batch, h + 1, w + 1]).astype(np.int32)
  ignore = rng.uniform(size=labels.shape) < 0.3
  labels[ignore] = label_values.IGNORE_LABEL
  labels[:, h, :] = 1  # Outside the logits: must not count.

  loss = losses.dense_softmax_loss(tf.constant(logits), tf.constant(labels))

  cropped = labels[:, :h, :w]
  valid = cropped != label_values.IGNORE_LABEL
  assert 0 < valid.sum() < cropped.size
  ce = softmax_ce_np(logits, np.where(valid, cropped, 0))
  np.testing.assert_allclose(float(loss), ce[valid].sum() / valid.sum(),
                             rtol=1e-5)


def test_dense_softmax_loss_all_ignored_is_zero():
  """An image with no labelled pixel adds 0, not 0 / 0."""
  labels = tf.fill([1, 2, 2], label_values.IGNORE_LABEL)
  assert float(losses.dense_softmax_loss(tf.ones([1, 2, 2, 3]), labels)) == 0


# Runs in a fresh interpreter; prints one JSON line {name: [one, mirrored]}.
_MIRRORED_SCRIPT = textwrap.dedent('''
    import json
    import numpy as np
    from masklab_tf.training import strategy as strategy_lib
    strategy_lib.split_cpu(2)
    import tensorflow as tf
    from masklab_tf.modeling import losses
    from masklab_tf.ops import label_values

    rng = np.random.default_rng(5)
    def f32(x):
      return tf.constant(np.asarray(x, np.float32))
    # Image 0 holds most of the sampled anchors, RoIs, instances and
    # labelled pixels, image 1 few: each replica's own count differs from
    # the global one, so only a globally normalised share adds up.
    labels = np.full([2, 24], -1, np.int32)
    labels[0, :20] = rng.choice([0, 1], 20)
    labels[1, :2] = [1, 0]
    classes = np.array([[1, 0, 2, 0, 3, 1], [0, -1, -1, -1, -1, -1]],
                       np.int32)
    corner = rng.uniform(0, 40, [2, 6, 2])
    rois = np.concatenate([corner, corner + rng.uniform(4, 20, [2, 6, 2])],
                          -1)
    mask_classes = np.array([[1, 2, 3], [2, 0, -1]], np.int32)
    dense = rng.integers(0, 3, [2, 4, 4]).astype(np.int32)
    dense[1][rng.uniform(size=[4, 4]) < 0.8] = label_values.IGNORE_LABEL
    inputs = {
        'rpn': (f32(rng.normal(0, 2, [2, 2, 4, 3])),
                f32(rng.normal(0, 2, [2, 2, 4, 12])), tf.constant(labels),
                f32(rng.normal(0, 2, [2, 24, 4]))),
        'box': (f32(rng.normal(0, 2, [2, 6, 4])),
                f32(rng.normal(0, 2, [2, 6, 16])), f32(rois),
                f32(rois + rng.uniform(-1, 1, rois.shape)),
                tf.constant(classes)),
        'mask': (f32(rng.normal(0, 2, [2, 3, 4, 4])),
                 f32(rng.uniform(0, 1, [2, 3, 4, 4])),
                 tf.constant(mask_classes)),
        'dense': (f32(rng.normal(0, 2, [2, 4, 4, 3])), tf.constant(dense)),
    }
    functions = {
        'rpn': losses.rpn_losses, 'box': losses.box_classifier_losses,
        'mask': lambda *a: (losses.mask_loss(*a),),
        'dense': lambda *a: (losses.dense_softmax_loss(*a),),
    }
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    assert strategy.num_replicas_in_sync == 2
    report = {}
    for name, fn in functions.items():
      one = [float(v) for v in fn(*inputs[name])]
      halves = strategy.experimental_distribute_values_from_function(
          lambda ctx, name=name: tuple(
              t[ctx.replica_id_in_sync_group:ctx.replica_id_in_sync_group + 1]
              for t in inputs[name]))
      shares = strategy.run(tf.function(lambda *a, fn=fn: fn(*a)),
                            args=halves)
      summed = [float(strategy.reduce(tf.distribute.ReduceOp.SUM, s,
                                      axis=None)) for s in shares]
      for i, (a, b) in enumerate(zip(one, summed)):
        report[f'{name}{i}'] = [a, b]
    print('REPORT ' + json.dumps(report))
''')


def test_mirrored_shares_sum_to_single_device_value():
  """Under MirroredStrategy on 2 logical CPUs, with unevenly filled halves,
  the two replicas' returns add up to the one-device loss, for every loss
  function (tests/training/test_distributed.py checks the whole training
  step's sums, but with the semantic loss off: dense_softmax_loss is
  covered only here)."""
  result = subprocess.run(
      [sys.executable, '-c', _MIRRORED_SCRIPT], cwd=REPO, capture_output=True,
      text=True, timeout=300, check=False,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
  lines = [line for line in result.stdout.splitlines()
           if line.startswith('REPORT ')]
  assert result.returncode == 0 and lines, result.stderr[-3000:]
  report = json.loads(lines[-1][len('REPORT '):])
  assert sorted(report) == ['box0', 'box1', 'dense0', 'mask0', 'rpn0',
                            'rpn1']
  for name, (one, mirrored) in report.items():
    assert one > 0, name
    np.testing.assert_allclose(mirrored, one, rtol=1e-5, err_msg=name)
