"""What the position-sensitive mask heads (FCIS, BiSeg) share.

Both read inside/outside position-sensitive score maps through the
assembling layer (ops/assemble.py, 'grid' channel maps) and plug into the
Faster R-CNN system like MaskLab's head (one box branch, one loop, one
evaluator), so their ablations run side by side.

Score-map layout, for k x k cells and C + 1 classes (background included):
channels [0, (C+1) k^2) are the outside maps, [(C+1) k^2, 2 (C+1) k^2) the
inside maps; class c's cells start at c k^2 in each half (cell index row by
row, ops/assemble.grid_channel_map). A box of class c assembles its outside
and inside likelihoods from class c's cells.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import outputs as outputs_lib
from masklab_tf.modeling.heads import semantic_head as semantic_head_lib
from masklab_tf.ops import assemble


class InsideOutside(tf_keras.layers.Layer):
  """Assembles class c's inside and outside maps for each box."""

  def __init__(self, num_classes: int, grid_size: int, crop_size: int,
               feature_stride: int, use_xla: bool, **kwargs):
    """Args: num_classes: K; grid_size: k; crop_size: S of the assembled
    crops; feature_stride: stride of the score maps; use_xla: compile the
    assembling core; **kwargs: Layer arguments."""
    super().__init__(**kwargs)
    self.num_classes, self.grid_size = num_classes, grid_size
    self.assemble = assemble.PositionSensitiveAssemble(
        crop_size=crop_size, feature_stride=feature_stride,
        channel_map_kind='grid', grid_size=grid_size, use_xla=use_xla,
        name='assemble')

  def call(self, score_maps, boxes, classes):
    """[B, h, w, 2 k^2 (K+1)], boxes [B, N, 4], classes [B, N] ->
    (inside, outside), each [B, N, S, S]."""
    cells = self.grid_size ** 2
    offsets = tf.maximum(tf.cast(classes, tf.int32), 0) * cells
    outside = self.assemble(score_maps, boxes, offsets)
    inside = self.assemble(score_maps, boxes,
                           offsets + (self.num_classes + 1) * cells)
    return inside, outside


class PositionSensitiveHead(tf_keras.layers.Layer):
  """The shared parts: the res5 feature reduction, the semantic logits
  (every head returns them: the inference model's semantic map reads them)
  and the res5 inside/outside maps."""

  PREDICTS = (outputs_lib.SEMANTIC_LOGITS,)
  NAME = ''  # The registry name, for messages.

  def __init__(self, num_classes: int, endpoint_strides: dict,
               crop_size: int = 41, ps_grid_size: int = 7,
               ps_feature_channels: int = 1024,
               semantic_head: str = 'conv1x1', use_xla: bool = True,
               **kwargs):
    """Builds the head (sublayers are made in `build`).

    Args:
      num_classes: K, object classes without background.
      endpoint_strides: stride of each backbone endpoint ('res5', and
        'res3' for BiSeg, are read: resnet.endpoint_strides).
      crop_size: S, side of the box-relative mask crops.
      ps_grid_size: k, cells per side of the res5 score maps (paper: 7).
      ps_feature_channels: channels of the 1x1 reduction of res5 (1024).
      semantic_head: 'conv1x1' or 'aspp' (semantic_head.py).
      use_xla: compile the assembling layer's core with XLA.
      **kwargs: tf_keras.layers.Layer arguments (name, dtype, ...).
    """
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.endpoint_strides = dict(endpoint_strides)
    self.crop_size = crop_size
    self.ps_grid_size = ps_grid_size
    self.ps_feature_channels = ps_feature_channels
    self.semantic_head = semantic_head
    self.use_xla = use_xla

  @classmethod
  def check_config(cls, cfg: config_lib.ModelConfig) -> None:
    """Rejects MaskLab's switches, which these heads have no part for."""
    owner = f'the {cls.NAME} mask head'
    head_config.require(
        cfg, 'mask_features', ('both',), owner,
        "builds masks from inside/outside score maps, not from MaskLab's "
        'semantic and direction crops; the feature ablations are '
        '--mask_head=masklab_semantic_only or masklab_direction_only')
    head_config.require(
        cfg, 'refine', (True,), owner,
        'has no refinement stage to turn off (--refine applies to the '
        'masklab heads)')
    head_config.require(
        cfg, 'refine_features', (config_lib.ModelConfig.refine_features,), owner,
        'has no refinement stage to feed (--refine_features applies to the '
        'masklab heads)')

  @classmethod
  def from_model_config(cls, cfg: config_lib.ModelConfig,
                        geometry: config_lib.GeometryConfig,
                        endpoint_strides: dict, use_xla: bool = True,
                        gather_crops: bool = False, **kwargs):
    """The head of `cfg`. Its crops are the assembling layer's gathers
    whatever `gather_crops` says (registry.py: every head takes it)."""
    del gather_crops
    cls.check_config(cfg)
    return cls(num_classes=cfg.num_classes,
               endpoint_strides=endpoint_strides,
               crop_size=geometry.mask_crop_size,
               ps_grid_size=cfg.ps_grid_size,
               ps_feature_channels=cfg.ps_feature_channels,
               semantic_head=cfg.semantic_head, use_xla=use_xla,
               **cls._extra_arguments(cfg), **kwargs)

  @classmethod
  def _extra_arguments(cls, cfg: config_lib.ModelConfig) -> dict:
    del cfg
    return {}

  def _conv(self, filters, name, activation=None):
    return tf_keras.layers.Conv2D(filters, 1, activation=activation,
                                  name=name)

  def _score_channels(self, grid_size):
    return 2 * grid_size ** 2 * (self.num_classes + 1)

  def build(self, input_shape):
    # BiSeg / FCIS: a 1x1 conv reduces res5 (2048 channels) to 1024.
    self.reduce = self._conv(self.ps_feature_channels, 'reduce', 'relu')
    self.semantic_conv = semantic_head_lib.build_semantic_head(
        self.semantic_head, self.num_classes + 1)
    self.score_maps = self._conv(self._score_channels(self.ps_grid_size),
                                 'score_maps')
    self.inside_outside = InsideOutside(
        self.num_classes, self.ps_grid_size, self._coarse_crop_size(),
        self.endpoint_strides['res5'], self.use_xla, name='inside_outside')
    super().build(input_shape)

  def _coarse_crop_size(self) -> int:
    return self.crop_size

  def get_config(self):
    return {
        **super().get_config(),
        'num_classes': self.num_classes,
        'endpoint_strides': self.endpoint_strides,
        'crop_size': self.crop_size,
        'ps_grid_size': self.ps_grid_size,
        'ps_feature_channels': self.ps_feature_channels,
        'semantic_head': self.semantic_head, 'use_xla': self.use_xla,
    }
