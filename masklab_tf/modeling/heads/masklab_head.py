"""MaskLab's mask head (Chen et al., CVPR 2018, sec. 3, Fig. 2-4)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.modeling.heads import head_config
from masklab_tf.modeling.heads import outputs as outputs_lib
from masklab_tf.modeling.heads import semantic_head as semantic_head_lib
from masklab_tf.ops import assemble
from masklab_tf.ops import roi_crop

MASK_FEATURES = ('both', 'semantic', 'direction')
# Endpoints the refinement may crop (paper Table 4: conv1, conv2 = res2,
# conv3 = res3).
REFINE_FEATURES = ('conv1', 'res2', 'res3')


@tf_keras.utils.register_keras_serializable(package='masklab')
class MaskLabHead(tf_keras.layers.Layer):
  """MaskLab's mask branch.

  Dense part (once per image): 1x1 convs on res5 give semantic logits [K+1]
  and direction logits [D*R]. Per box: the semantic channel of the box's
  class cropped to S x S, the direction logits assembled by direction
  pooling (each crop position reads the channel of its own direction and
  distance bin), concatenated and fused by a class-agnostic 1x1 conv
  initialised to (0.5, 1.0) (paper 4.1: faster convergence) into coarse mask
  logits. Refinement: the coarse logits, concatenated with conv1 and res2
  features cropped on the same box (hypercolumn), go through three 5x5
  convs (64 filters) and a 1x1 conv to the refined logits.

  Both dense maps exist in every ablation (`features`): the semantic map is
  an output of its own and the direction loss may be on.
  """

  PREDICTS = (outputs_lib.SEMANTIC_LOGITS, outputs_lib.DIRECTION_LOGITS)

  def __init__(self, num_classes: int, endpoint_strides: dict,
               crop_size: int = 41, num_directions: int = 8,
               num_distance_bins: int = 4, features: str = 'both',
               refine: bool = True,
               refine_features: tuple[str, ...] = ('conv1', 'res2'),
               hypercolumn_channels: int = 0,
               refine_filters: int = 64, semantic_head: str = 'conv1x1',
               use_xla: bool = True, gather_crops: bool = False, **kwargs):
    """Builds the head (sublayers are made in `build`).

    Args:
      num_classes: K, object classes without background.
      endpoint_strides: stride of each backbone endpoint ('conv1', 'res2',
        'res5' are read: resnet.endpoint_strides).
      crop_size: S, side of the box-relative mask crops (paper: 41).
      num_directions: D, angular bins of direction pooling (paper: 8).
      num_distance_bins: R, radial bins (paper: 4).
      features: 'both', 'semantic' or 'direction': which crops the coarse
        mask fuses (paper Table 2).
      refine: hypercolumn refinement on or off (paper Table 4).
      refine_features: the endpoints of REFINE_FEATURES whose features the
        refinement crops beside the coarse mask (paper Table 4: conv1 and
        res2).
      hypercolumn_channels: > 0 reduces each refine_features endpoint to
        this many channels by 1x1 convs before cropping; 0 crops them whole
        (paper).
      refine_filters: filters of the three 5x5 refinement convs (paper: 64).
      semantic_head: 'conv1x1' (MaskLab) or 'aspp' (semantic_head.py).
      use_xla: compile the assembling layer's core with XLA.
      gather_crops: crop the refinement's hypercolumn by gathering
        (roi_crop.crop_rois' `gather`: deterministic runs on a GPU).
      **kwargs: tf_keras.layers.Layer arguments (name, dtype, ...).
    """
    super().__init__(**kwargs)
    if features not in MASK_FEATURES:
      raise ValueError(f'features must be one of {MASK_FEATURES}, got '
                       f'{features!r}')
    unknown = set(refine_features) - set(REFINE_FEATURES)
    if unknown or len(set(refine_features)) != len(refine_features):
      raise ValueError(f'refine_features: distinct endpoints of '
                       f'{REFINE_FEATURES}, got {tuple(refine_features)}')
    self.num_classes = num_classes
    self.endpoint_strides = dict(endpoint_strides)
    self.crop_size = crop_size
    self.num_directions = num_directions
    self.num_distance_bins = num_distance_bins
    self.features = features
    self.refine = refine
    self.refine_features = tuple(refine_features)
    self.hypercolumn_channels = hypercolumn_channels
    self.refine_filters = refine_filters
    self.semantic_head = semantic_head
    self.use_xla = use_xla
    self.gather_crops = gather_crops

  @classmethod
  def from_model_config(cls, cfg: config_lib.ModelConfig,
                        geometry: config_lib.GeometryConfig,
                        endpoint_strides: dict, use_xla: bool = True,
                        gather_crops: bool = False,
                        features: str | None = None, **kwargs):
    """The head of `cfg`; `features` overrides cfg.mask_features (the
    ablation systems fix it)."""
    head_config.require(cfg, 'mask_features', MASK_FEATURES,
                        'the masklab mask head',
                        f'takes one of {", ".join(MASK_FEATURES)}')
    return cls(num_classes=cfg.num_classes,
               endpoint_strides=endpoint_strides,
               crop_size=geometry.mask_crop_size,
               num_directions=geometry.num_directions,
               num_distance_bins=geometry.num_distance_bins,
               features=features or cfg.mask_features, refine=cfg.refine,
               refine_features=tuple(cfg.refine_features),
               hypercolumn_channels=cfg.hypercolumn_channels,
               refine_filters=cfg.refine_filters,
               semantic_head=cfg.semantic_head, use_xla=use_xla,
               gather_crops=gather_crops, **kwargs)

  @property
  def uses_semantic(self) -> bool:
    return self.features in ('both', 'semantic')

  @property
  def uses_direction(self) -> bool:
    return self.features in ('both', 'direction')

  def build(self, input_shape):
    stride = self.endpoint_strides['res5']
    self.semantic_conv = semantic_head_lib.build_semantic_head(
        self.semantic_head, self.num_classes + 1)
    self.direction_conv = tf_keras.layers.Conv2D(
        self.num_directions * self.num_distance_bins, 1,
        name='direction_logits')
    self.semantic_crop = assemble.PositionSensitiveAssemble(
        crop_size=self.crop_size, feature_stride=stride,
        channel_map_kind='constant', use_xla=self.use_xla,
        name='semantic_crop')
    self.direction_pool = assemble.PositionSensitiveAssemble(
        crop_size=self.crop_size, feature_stride=stride,
        channel_map_kind='direction', num_directions=self.num_directions,
        num_distance_bins=self.num_distance_bins, use_xla=self.use_xla,
        name='direction_pool')
    init = {'both': [0.5, 1.0], 'semantic': [0.5], 'direction': [1.0]}
    self.fuse = tf_keras.layers.Conv2D(
        1, 1, name='fuse',
        kernel_initializer=tf_keras.initializers.Constant(
            init[self.features]))
    if self.hypercolumn_channels:
      # Attributes reduce_<endpoint>, as checkpoints of the conv1 + res2
      # head have always named them.
      for endpoint in self.refine_features:
        setattr(self, f'reduce_{endpoint}', tf_keras.layers.Conv2D(
            self.hypercolumn_channels, 1, activation='relu',
            name=f'reduce_{endpoint}'))
    if self.refine:
      self.refine_convs = [
          tf_keras.layers.Conv2D(self.refine_filters, 5, padding='same',
                                 activation='relu', name=f'refine_{i}')
          for i in range(3)]
      self.refine_logits = tf_keras.layers.Conv2D(1, 1, name='refine_logits')
    super().build(input_shape)

  def dense_logits(self, endpoints):
    """res5 -> semantic [B, h, w, K+1] and direction [B, h, w, D*R] logits."""
    return (self.semantic_conv(endpoints['res5']),
            self.direction_conv(endpoints['res5']))

  def call(self, endpoints, boxes, classes, training=None):
    """Args: endpoints: the backbone's dict; boxes [B, N, 4] image pixels;
    classes int [B, N] (1..K, <= 0 for padding). Returns the dict of
    heads/outputs.py."""
    semantic_logits, direction_logits = self.dense_logits(endpoints)
    crops = []
    if self.uses_semantic:
      channel = tf.maximum(tf.cast(classes, tf.int32), 0)
      crops.append(self.semantic_crop(semantic_logits, boxes, channel))
    if self.uses_direction:
      crops.append(self.direction_pool(direction_logits, boxes))
    stacked = tf.cast(tf.stack(crops, axis=-1), self.compute_dtype)
    coarse = self.fuse(stacked)[..., 0]  # [B, N, S, S]
    outputs = {outputs_lib.SEMANTIC_LOGITS: semantic_logits,
               outputs_lib.DIRECTION_LOGITS: direction_logits,
               outputs_lib.COARSE_MASK_LOGITS: coarse,
               outputs_lib.MASK_LOGITS: coarse}
    if self.refine:
      outputs[outputs_lib.MASK_LOGITS] = self._refine(endpoints, boxes,
                                                      coarse)
    return outputs

  def _refine(self, endpoints, boxes, coarse):
    hyper = []
    for endpoint in self.refine_features:
      features = endpoints[endpoint]
      if self.hypercolumn_channels:
        features = getattr(self, f'reduce_{endpoint}')(features)
      hyper.append(roi_crop.crop_rois(
          features, boxes, self.crop_size, self.endpoint_strides[endpoint],
          gather=self.gather_crops))
    hyper = [tf.cast(h, self.compute_dtype) for h in hyper]
    net = tf.concat([coarse[..., tf.newaxis]] + hyper, axis=-1)
    shape = tf.shape(net)
    net = tf.reshape(net, tf.concat([[-1], shape[2:]], 0))
    for conv in self.refine_convs:
      net = conv(net)
    logits = self.refine_logits(net)[..., 0]
    return tf.reshape(logits, shape[:4])

  def get_config(self):
    return {
        **super().get_config(),
        'num_classes': self.num_classes,
        'endpoint_strides': self.endpoint_strides,
        'crop_size': self.crop_size,
        'num_directions': self.num_directions,
        'num_distance_bins': self.num_distance_bins,
        'features': self.features, 'refine': self.refine,
        'refine_features': self.refine_features,
        'hypercolumn_channels': self.hypercolumn_channels,
        'refine_filters': self.refine_filters,
        'semantic_head': self.semantic_head, 'use_xla': self.use_xla,
        'gather_crops': self.gather_crops,
    }
