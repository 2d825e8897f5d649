"""Mask heads behind one interface, chosen by name from a registry.

Every head is a tf_keras layer called as
  head(endpoints, boxes, classes) -> dict
with endpoints the backbone's feature dict ('conv1', 'res2', ..., 'res5'),
boxes [B, N, 4] in image pixels, classes int [B, N] (1..K; <= 0 for padding),
returning at least 'mask_logits' [B, N, S, S] (box-relative, the crop
convention of ops/crop.py) plus whatever dense maps the head predicts (MaskLab:
'semantic_logits', 'direction_logits'). The seed papers' other systems
(InstanceFCN, FCIS, BiSeg) register here too, so their ablations run side by
side on one model and one training loop.
"""

from __future__ import annotations

import inspect
from typing import Callable

import tensorflow as tf
import tf_keras

from masklab_tf.modeling.heads import semantic_head as semantic_head_lib
from masklab_tf.ops import assemble
from masklab_tf.ops import roi_crop

# name -> (factory, the layer class it builds).
_REGISTRY: dict[str, tuple[Callable[..., tf_keras.layers.Layer], type]] = {}


def register(name: str, builds: type | None = None):
  """Decorator: makes a head buildable by `build_mask_head(name)`.

  Decorates a layer class, or a factory function of one (then `builds`
  names the class, whose constructor arguments the factory accepts).
  """
  def wrap(factory):
    _REGISTRY[name] = (factory, builds or factory)
    return factory
  return wrap


def available_heads() -> list[str]:
  return sorted(_REGISTRY)


def _constructor_arguments(cls: type) -> set[str]:
  """Named constructor arguments of cls and its bases up to Layer."""
  names = {'name', 'dtype', 'trainable'}
  for klass in cls.__mro__:
    if klass is tf_keras.layers.Layer:
      break
    if '__init__' in vars(klass):
      names.update(
          p.name for p in inspect.signature(klass.__init__).parameters.values()
          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
  return names - {'self'}


def build_mask_head(head: str, **kwargs) -> tf_keras.layers.Layer:
  """Builds a registered head from the model's common arguments; each head
  takes those its constructor names (e.g. grid sizes only for the
  position-sensitive heads) and ignores the rest."""
  if head not in _REGISTRY:
    raise ValueError(f"unknown mask head {head!r}; available: "
                     f'{", ".join(available_heads())}')
  factory, cls = _REGISTRY[head]
  accepted = _constructor_arguments(cls)
  return factory(**{k: v for k, v in kwargs.items() if k in accepted})


MASK_FEATURES = ('both', 'semantic', 'direction')


@register('masklab')
@tf_keras.utils.register_keras_serializable(package='masklab')
class MaskLabHead(tf_keras.layers.Layer):
  """MaskLab's mask branch (sec. 3, Fig. 2-4).

  Dense part (once per image): 1x1 convs on res5 give semantic logits [K+1]
  and direction logits [D*R]. Per box: the semantic channel of the box's
  class cropped to S x S, the direction logits assembled by direction
  pooling (each crop position reads the channel of its own direction and
  distance bin), concatenated and fused by a class-agnostic 1x1 conv
  initialised to (0.5, 1.0) (paper 4.1: faster convergence) into coarse mask
  logits. Refinement: the coarse logits, concatenated with conv1 and res2
  features cropped on the same box (hypercolumn), go through three 5x5
  convs (64 filters) and a 1x1 conv to the refined logits.
  """

  def __init__(self, num_classes: int, crop_size: int = 41,
               num_directions: int = 8, num_distance_bins: int = 4,
               output_stride: int = 8, features: str = 'both',
               refine: bool = True, hypercolumn_channels: int = 0,
               refine_filters: int = 64, semantic_head: str = 'conv1x1',
               use_xla: bool = True, kernel_regularizer=None, **kwargs):
    super().__init__(**kwargs)
    if features not in MASK_FEATURES:
      raise ValueError(f'features must be one of {MASK_FEATURES}, got '
                       f'{features!r}')
    self.num_classes = num_classes
    self.crop_size = crop_size
    self.num_directions = num_directions
    self.num_distance_bins = num_distance_bins
    self.output_stride = output_stride
    self.features = features
    self.refine = refine
    self.hypercolumn_channels = hypercolumn_channels
    self.refine_filters = refine_filters
    self.semantic_head = semantic_head
    self.use_xla = use_xla
    self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

  @property
  def uses_semantic(self) -> bool:
    return self.features in ('both', 'semantic')

  @property
  def uses_direction(self) -> bool:
    return self.features in ('both', 'direction')

  def build(self, input_shape):
    reg = dict(kernel_regularizer=self.kernel_regularizer)
    # Both dense maps exist in every ablation: the semantic map is an output
    # of its own and the direction loss may be on.
    self.semantic_conv = semantic_head_lib.build_semantic_head(
        self.semantic_head, self.num_classes + 1, **reg)
    self.direction_conv = tf_keras.layers.Conv2D(
        self.num_directions * self.num_distance_bins, 1,
        name='direction_logits', **reg)
    self.semantic_crop = assemble.PositionSensitiveAssemble(
        crop_size=self.crop_size, feature_stride=self.output_stride,
        channel_map_kind='constant', use_xla=self.use_xla,
        name='semantic_crop')
    self.direction_pool = assemble.PositionSensitiveAssemble(
        crop_size=self.crop_size, feature_stride=self.output_stride,
        channel_map_kind='direction', num_directions=self.num_directions,
        num_distance_bins=self.num_distance_bins, use_xla=self.use_xla,
        name='direction_pool')
    init = {'both': [0.5, 1.0], 'semantic': [0.5], 'direction': [1.0]}
    self.fuse = tf_keras.layers.Conv2D(
        1, 1, name='fuse',
        kernel_initializer=tf_keras.initializers.Constant(
            init[self.features]))
    if self.hypercolumn_channels:
      self.reduce_conv1 = tf_keras.layers.Conv2D(
          self.hypercolumn_channels, 1, activation='relu',
          name='reduce_conv1', **reg)
      self.reduce_res2 = tf_keras.layers.Conv2D(
          self.hypercolumn_channels, 1, activation='relu',
          name='reduce_res2', **reg)
    if self.refine:
      self.refine_convs = [
          tf_keras.layers.Conv2D(self.refine_filters, 5, padding='same',
                                 activation='relu', name=f'refine_{i}', **reg)
          for i in range(3)]
      self.refine_logits = tf_keras.layers.Conv2D(1, 1, name='refine_logits',
                                                  **reg)
    super().build(input_shape)

  def dense_logits(self, endpoints):
    """res5 -> semantic [B, h, w, K+1] and direction [B, h, w, D*R] logits."""
    return (self.semantic_conv(endpoints['res5']),
            self.direction_conv(endpoints['res5']))

  def call(self, endpoints, boxes, classes, training=None):
    semantic_logits, direction_logits = self.dense_logits(endpoints)
    crops = []
    if self.uses_semantic:
      channel = tf.maximum(tf.cast(classes, tf.int32), 0)
      crops.append(self.semantic_crop(semantic_logits, boxes, channel))
    if self.uses_direction:
      crops.append(self.direction_pool(direction_logits, boxes))
    stacked = tf.cast(tf.stack(crops, axis=-1), self.compute_dtype)
    coarse = self.fuse(stacked)[..., 0]  # [B, N, S, S]
    outputs = {'semantic_logits': semantic_logits,
               'direction_logits': direction_logits,
               'coarse_mask_logits': coarse,
               'mask_logits': coarse}
    if self.refine:
      outputs['mask_logits'] = self._refine(endpoints, boxes, coarse)
    return outputs

  def _refine(self, endpoints, boxes, coarse):
    conv1, res2 = endpoints['conv1'], endpoints['res2']
    if self.hypercolumn_channels:
      conv1, res2 = self.reduce_conv1(conv1), self.reduce_res2(res2)
    hyper = [roi_crop.crop_rois(conv1, boxes, self.crop_size, 2),
             roi_crop.crop_rois(res2, boxes, self.crop_size, 4)]
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
        'num_classes': self.num_classes, 'crop_size': self.crop_size,
        'num_directions': self.num_directions,
        'num_distance_bins': self.num_distance_bins,
        'output_stride': self.output_stride, 'features': self.features,
        'refine': self.refine,
        'hypercolumn_channels': self.hypercolumn_channels,
        'refine_filters': self.refine_filters,
        'semantic_head': self.semantic_head, 'use_xla': self.use_xla,
        'kernel_regularizer': tf_keras.regularizers.serialize(
            self.kernel_regularizer) if self.kernel_regularizer else None,
    }


@register('masklab_semantic_only', builds=MaskLabHead)
def _semantic_only(**kwargs):
  return MaskLabHead(**{**kwargs, 'features': 'semantic'})


@register('masklab_direction_only', builds=MaskLabHead)
def _direction_only(**kwargs):
  return MaskLabHead(**{**kwargs, 'features': 'direction'})


# The position-sensitive heads (FCIS, BiSeg) register themselves.
from masklab_tf.modeling.heads import position_sensitive  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import
