"""MaskLab's head: which backbone features the refinement reads (paper
Table 4), shown by perturbing one endpoint at a time."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf.modeling.backbones import resnet
from masklab_tf.modeling.heads import masklab_head

SIZE = 64
CHANNELS = {'conv1': 8, 'res2': 6, 'res3': 5, 'res5': 7}


def _endpoints(seed=0):
  strides = resnet.endpoint_strides(8)
  rng = np.random.default_rng(seed)
  return {name: tf.constant(rng.normal(size=[
      1, SIZE // strides[name], SIZE // strides[name], channels]),
                            tf.float32)
          for name, channels in CHANNELS.items()}


def _head(refine_features, hypercolumn_channels=4):
  tf_keras.utils.set_random_seed(0)
  return masklab_head.MaskLabHead(
      num_classes=2, endpoint_strides=resnet.endpoint_strides(8),
      crop_size=9, refine_features=refine_features,
      hypercolumn_channels=hypercolumn_channels, refine_filters=4,
      use_xla=False, name='mask_head')


BOXES = tf.constant([[[8.0, 10.0, 40.0, 50.0]]])
CLASSES = tf.constant([[1]])


@pytest.mark.parametrize('refine_features', [
    ('conv1',), ('res2',), ('conv1', 'res2'), ('conv1', 'res2', 'res3')])
@pytest.mark.parametrize('hypercolumn_channels', [0, 4])
def test_the_refined_mask_reads_exactly_the_chosen_endpoints(
    refine_features, hypercolumn_channels):
  head = _head(refine_features, hypercolumn_channels)
  endpoints = _endpoints()
  base = head(endpoints, BOXES, CLASSES)
  for name in ('conv1', 'res2', 'res3'):
    moved = dict(endpoints, **{name: endpoints[name] * 3.0 + 1.0})
    outputs = head(moved, BOXES, CLASSES)
    changed = not np.allclose(outputs['mask_logits'], base['mask_logits'])
    assert changed is (name in refine_features), name
    # The coarse mask (semantic and direction crops of res5) reads none.
    np.testing.assert_array_equal(outputs['coarse_mask_logits'],
                                  base['coarse_mask_logits'])
  reduce = sorted(layer.name for layer in head._flatten_layers(
      include_self=False, recursive=False) if layer.name.startswith('reduce_'))
  assert reduce == (sorted(f'reduce_{n}' for n in refine_features)
                    if hypercolumn_channels else [])


def test_the_paper_default_keeps_its_weight_names():
  """conv1 + res2 heads have always named their reductions so: the
  checkpoints written before refine_features existed still restore."""
  head = _head(('conv1', 'res2'))
  head(_endpoints(), BOXES, CLASSES)
  names = [w.name for w in head.weights if 'reduce' in w.name]
  assert names == [f'mask_head/reduce_{endpoint}/{kind}:0'
                   for endpoint in ('conv1', 'res2')
                   for kind in ('kernel', 'bias')]
  assert masklab_head.MaskLabHead.from_config(head.get_config(
  )).refine_features == ('conv1', 'res2')


@pytest.mark.parametrize('bad', [('res4',), ('conv1', 'conv1')])
def test_unknown_or_repeated_endpoints_are_refused(bad):
  with pytest.raises(ValueError, match='refine_features: distinct endpoints'):
    _head(bad)
