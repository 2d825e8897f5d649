"""FCIS and BiSeg heads: the inside/outside layout by hand, shapes, a
learning check, config round trips, the settings they refuse."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf.modeling import factory
from masklab_tf.modeling.backbones import resnet
from masklab_tf.modeling.heads import fcis_head
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import position_sensitive
from masklab_tf.modeling.systems import registry


def test_inside_outside_reads_the_class_cells_of_each_quadrant():
  """One class (C + 1 = 2), a 2x2 grid: 16 maps, map m constant m. A box
  through the 4 pixel centres of each axis, class 1: its outside cells are
  maps 4..7, its inside cells 12..15, one per quadrant of the 4x4 crop."""
  layer = position_sensitive.InsideOutside(
      num_classes=1, grid_size=2, crop_size=4, feature_stride=1,
      use_xla=False)
  maps = tf.broadcast_to(tf.range(16, dtype=tf.float32), [1, 4, 4, 16])
  box = tf.constant([[[0.5, 0.5, 3.5, 3.5]]])  # Samples at pixel centres.
  inside, outside = layer(maps, box, tf.constant([[1]]))
  quadrants = np.array([[0, 0, 1, 1], [0, 0, 1, 1],
                        [2, 2, 3, 3], [2, 2, 3, 3]])
  np.testing.assert_array_equal(outside[0, 0], 4 + quadrants)
  np.testing.assert_array_equal(inside[0, 0], 12 + quadrants)
  # Class 0 (background) reads the first cells of each half.
  inside, outside = layer(maps, box, tf.constant([[0]]))
  np.testing.assert_array_equal(outside[0, 0], quadrants)
  np.testing.assert_array_equal(inside[0, 0], 8 + quadrants)


def test_fcis_mask_logit_is_inside_minus_outside():
  head = fcis_head.FcisHead(num_classes=1, endpoint_strides={'res5': 1},
                            crop_size=4, ps_grid_size=2,
                            ps_feature_channels=4, use_xla=False)
  endpoints = {'res5': tf.random.stateless_normal([1, 4, 4, 8], [0, 1])}
  box = tf.constant([[[0.5, 0.5, 3.5, 3.5]]])  # Samples at pixel centres.
  out = head(endpoints, box, tf.constant([[1]]))
  inside, outside = head.inside_outside(
      head.score_maps(head.reduce(endpoints['res5'])), box,
      tf.constant([[1]]))
  np.testing.assert_allclose(out['mask_logits'], inside - outside, atol=1e-6)
  assert out['semantic_logits'].shape == (1, 4, 4, 2)


@pytest.mark.parametrize('name', ['fcis', 'biseg'])
def test_heads_train_in_the_whole_model(name, tiny):
  tf_keras.utils.set_random_seed(2)
  cfg = tiny.config(mask_head=name, ps_grid_size=3, ps_grid_size_fine=5,
                    ps_feature_channels=32, semantic_loss_weight=1.0)
  models = factory.build_models(cfg, max_instances=tiny.max_instances)
  batch = tiny.batch()
  batch['semantic_labels'] = tf.zeros([2, 64, 64], tf.uint8)
  outputs = models.train_model(models.system.model_inputs(batch, True),
                               training=True)
  assert outputs['mask_logits'].shape == (2, tiny.max_instances, 41, 41)
  history = tiny.sgd_steps(models, batch, 6)
  assert float(history[-1]['mask_coarse']) < float(
      history[0]['mask_coarse'])
  assert all(np.isfinite(float(h['total'])) for h in history)
  inference = models.inference_model(
      {'image': batch['image'], 'image_size': batch['image_size']})
  assert inference['detection_masks'].shape == (2, 5, 41, 41)
  assert inference['semantic_map'].shape == (2, 64, 64)


@pytest.mark.parametrize('name', ['fcis', 'biseg'])
@pytest.mark.parametrize('setting, message', [
    (dict(mask_features='semantic'),
     '--mask_features=semantic: the {} mask head builds masks from '
     'inside/outside score maps'),
    (dict(refine=False),
     '--refine=false: the {} mask head has no refinement stage to turn off'),
    (dict(refine_features=('conv1',)),
     '--refine_features=conv1: the {} mask head has no refinement stage to '
     'feed'),
    (dict(direction_loss_weight=1.0),
     '--direction_loss_weight=1.0: the {} mask head predicts no '
     'direction_logits; set --direction_loss_weight=0 \\(heads with '
     'direction_logits: masklab\\)'),
])
def test_position_sensitive_heads_refuse_what_they_cannot_do(
    name, setting, message, tiny):
  with pytest.raises(head_config.UnsupportedSettingError,
                     match=message.format(name)):
    factory.build_models(tiny.config(mask_head=name, **setting),
                         max_instances=tiny.max_instances)


def test_an_ablation_system_refuses_another_ablation(tiny):
  with pytest.raises(head_config.UnsupportedSettingError,
                     match="--mask_features=direction: "
                     "--mask_head=masklab_semantic_only fixes the features "
                     "to 'semantic'"):
    registry.get_system(tiny.config(mask_head='masklab_semantic_only',
                                    mask_features='direction'))


@pytest.mark.parametrize('name', ['fcis', 'biseg'])
def test_config_round_trip(name, tiny):
  head = registry.get_system(tiny.config(mask_head=name)).head_class(
      num_classes=3, endpoint_strides=resnet.endpoint_strides(8))
  clone = head.__class__.from_config(head.get_config())
  assert clone.get_config() == head.get_config()
  assert tf_keras.layers.deserialize(
      tf_keras.layers.serialize(head)).get_config() == head.get_config()

