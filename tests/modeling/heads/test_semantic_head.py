"""Semantic logits heads: 1x1 conv and ASPP, in every mask head."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from masklab_tf import config
from masklab_tf.modeling.backbones import resnet
from masklab_tf.modeling.heads import registry
from masklab_tf.modeling.heads import semantic_head as semantic_head_lib


def test_aspp_shapes_parameters_and_round_trip():
  head = semantic_head_lib.build_semantic_head('aspp', 5, filters=8,
                                            rates=(2, 4, 6))
  out = head(tf.ones([2, 12, 10, 16]))
  assert out.shape == (2, 12, 10, 5)
  # 1x1 (16*8+8) + three 3x3 (9*16*8+8) + project (32*8+8) + logits (8*5+5)
  assert head.count_params() == (136 + 3 * 1160 + 264 + 45)
  rates = [layer.dilation_rate for layer in head.branches[1:]]
  assert rates == [(2, 2), (4, 4), (6, 6)]
  clone = tf_keras.layers.deserialize(tf_keras.layers.serialize(head))
  assert clone.get_config() == head.get_config()


def test_unknown_semantic_head_is_a_clear_error():
  with pytest.raises(ValueError, match='semantic head must be one of'):
    semantic_head_lib.build_semantic_head('fpn', 5)


@pytest.mark.parametrize('name', sorted(registry.MASK_HEADS))
def test_every_mask_head_takes_the_aspp_option(name, tiny):
  cfg = tiny.config(mask_head=name, num_classes=2, ps_grid_size=3,
                    ps_grid_size_fine=3, ps_feature_channels=8,
                    hypercolumn_channels=4, refine_filters=4,
                    semantic_head='aspp')
  head = registry.get_mask_head_class(name).from_model_config(
      cfg, config.GeometryConfig(mask_crop_size=9),
      resnet.endpoint_strides(8), use_xla=False)
  endpoints = {
      'conv1': tf.ones([1, 32, 32, 8]), 'res2': tf.ones([1, 16, 16, 8]),
      'res3': tf.ones([1, 8, 8, 8]), 'res5': tf.ones([1, 8, 8, 16])}
  out = head(endpoints, tf.constant([[[4.0, 4.0, 40.0, 48.0]]]),
             tf.constant([[1]]))
  assert out['semantic_logits'].shape == (1, 8, 8, 3)
  assert out['mask_logits'].shape == (1, 1, 9, 9)
  assert isinstance(head.semantic_conv, semantic_head_lib.AsppSemanticHead)
  assert np.isfinite(out['mask_logits'].numpy()).all()
