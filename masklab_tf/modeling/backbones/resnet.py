"""Atrous (dilated) ResNet backbone and the duplicated conv5 block.

MaskLab (sec. 3, 4.1) extracts features with a ResNet whose last blocks trade
stride for atrous rate, so that res5 keeps output stride 8 (or 16); the res5
units take multi-grid rates (base rate x (1, 2, 4), Table 5). The box
classifier of Faster R-CNN gets "one extra duplicate conv5 block" on res4
crops, with its own weights (initialised from the same ImageNet ResNet,
Table 6) and its own multi-grid rates.

Model Garden's `DilatedResNet` starts at depth 50 and drops the res4 endpoint
once dilation starts, so the network is assembled here from
`official.vision.modeling.layers.nn_blocks`, in the same layer order as
`official.vision.modeling.backbones.ResNet`: its checkpoints then map onto
ours layer by layer (`load_resnet_checkpoint`). Basic (two 3x3) blocks need a
dilation rate, which `nn_blocks.ResidualBlock` lacks; `AtrousResidualBlock`
adds it with the same sublayers in the same order.

Endpoints (stride for output stride 8 / 16 / 32; channels for basic
blocks (depth 10, 18, 26, 34) / bottlenecks (50, 101)):

  conv1  2 / 2 / 2      64 / 64     first conv of the stem, after BN + ReLU
  res2   4 / 4 / 4      64 / 256
  res3   8 / 8 / 8     128 / 512
  res4   8 / 16 / 16   256 / 1024   (res4 at rate 2 for output stride 8)
  res5   8 / 16 / 32   512 / 2048   (rate 4 / 2 / 1, times multi-grid)
"""

from __future__ import annotations

from typing import Optional, Sequence

import tf_keras

from official.vision.modeling.backbones import resnet as mg_resnet

from masklab_tf.modeling.layers import resnet_blocks

# (block type, filters, repeats) per stage res2..res5: Model Garden's table.
# Note depth 26 is basic blocks [3, 3, 3, 3] there, not bottlenecks.
RESNET_SPECS = {
    depth: mg_resnet.RESNET_SPECS[depth] for depth in (10, 18, 26, 34, 50,
                                                       101)
}
STAGES = ('res2', 'res3', 'res4', 'res5')
_STEM_STRIDE = 4  # conv1 (stride 2) then max pooling (stride 2).


def check_depth(depth: int):
  if depth not in RESNET_SPECS:
    raise ValueError(f'ResNet depth {depth} is not supported; choose one of '
                     f'{sorted(RESNET_SPECS)}.')


def endpoint_channels(depth: int) -> dict[str, int]:
  """{'conv1': 64, 'res2': ..., 'res5': ...} channels of each endpoint."""
  check_depth(depth)
  expansion = 4 if RESNET_SPECS[depth][0][0] == 'bottleneck' else 1
  channels = {'conv1': 64}
  for stage, (_, filters, _) in zip(STAGES, RESNET_SPECS[depth]):
    channels[stage] = filters * expansion
  return channels


def stage_strides_and_rates(output_stride: int) -> dict[str, tuple]:
  """{stage: (block stride, accumulated stride, atrous rate)} for res2..res5.

  DeepLab style: once the accumulated stride reaches `output_stride`, a stage
  that would downsample runs at stride 1 and multiplies the atrous rate
  instead, so every later 3x3 conv sees the receptive field it had in the
  plain network (as Model Garden's DilatedResNet does, the whole stage,
  first unit included, takes the new rate).
  """
  if output_stride not in (8, 16, 32):
    raise ValueError(f'output_stride must be 8, 16 or 32, got {output_stride}.')
  result = {}
  current_stride, rate = _STEM_STRIDE, 1
  for i, stage in enumerate(STAGES):
    stride = 1 if i == 0 else 2
    if current_stride * stride > output_stride:
      rate *= stride
      stride = 1
    current_stride *= stride
    result[stage] = (stride, current_stride, rate)
  return result


def endpoint_strides(output_stride: int) -> dict[str, int]:
  """{'conv1': 2, 'res2': 4, ..., 'res5': output_stride}."""
  strides = {'conv1': 2}
  for stage, (_, stride, _) in stage_strides_and_rates(output_stride).items():
    strides[stage] = stride
  return strides


def _make_block(block_type: str, name: str, **kwargs):
  """One ResNet unit: AtrousBottleneckBlock or AtrousResidualBlock."""
  if block_type == 'bottleneck':
    return resnet_blocks.AtrousBottleneckBlock(name=name, **kwargs)
  return resnet_blocks.AtrousResidualBlock(name=name, **kwargs)


def _block_group(x, block_type: str, filters: int, strides: int,
                 rates: Sequence[int], name: str, unit_prefix: str,
                 **norm_args):
  """len(rates) units f'{unit_prefix}_unit{i}'; the first projects, strides.

  Mirrors Model Garden's `ResNet._block_group` (ending in a linear Activation
  named `name`), so layer order matches its checkpoints.
  """
  for i, rate in enumerate(rates):
    x = _make_block(
        block_type,
        name=f'{unit_prefix}_unit{i + 1}',
        filters=filters,
        strides=strides if i == 0 else 1,
        dilation_rate=rate,
        use_projection=(i == 0),
        **norm_args)(x)
  return tf_keras.layers.Activation('linear', name=name)(x)


def _norm_args(norm_momentum, norm_epsilon, use_sync_bn):
  return dict(norm_momentum=norm_momentum, norm_epsilon=norm_epsilon,
              use_sync_bn=use_sync_bn)


def _unit_rates(base_rate: int, multigrid: Sequence[int], repeats: int):
  return [base_rate * multigrid[i % len(multigrid)] for i in range(repeats)]


def build_backbone(depth: int,
                   output_stride: int = 8,
                   multigrid: Sequence[int] = (1, 1, 1),
                   *,
                   norm_momentum: float = 0.997,
                   norm_epsilon: float = 1e-5,
                   use_sync_bn: bool = False,
                   input_specs: Optional[tf_keras.layers.InputSpec] = None
                   ) -> tf_keras.Model:
  """Atrous ResNet: images [B, H, W, 3] -> dict of endpoint features.

  Args:
    depth: 10, 18, 26, 34 (basic blocks) or 50, 101 (bottlenecks).
    output_stride: 8, 16 or 32 (32 is the plain ResNet), the stride of res5.
    multigrid: res5's unit i uses atrous rate base_rate * multigrid[i % len]
      (MaskLab Table 5: (1, 2, 4) at output stride 8 gives rates 4, 8, 16).
    norm_momentum: batch norm moving-average momentum.
    norm_epsilon: batch norm epsilon.
    use_sync_bn: synchronise batch statistics across replicas.
    input_specs: InputSpec of the images; default [None, None, None, 3].

  Returns:
    A functional tf_keras.Model (layer order as Model Garden's ResNet) whose
    output is {'conv1', 'res2', 'res3', 'res4', 'res5'} -> [B, ceil(H / s),
    ceil(W / s), C], strides s from `endpoint_strides(output_stride)` and
    channels C from `endpoint_channels(depth)`. 'conv1' is the stem conv's
    output after BN + ReLU, before max pooling (MaskLab's hypercolumn).
  """
  check_depth(depth)
  if not multigrid:
    raise ValueError('multigrid must hold at least one rate.')
  plan = stage_strides_and_rates(output_stride)
  norm_args = _norm_args(norm_momentum, norm_epsilon, use_sync_bn)
  if input_specs is None:
    input_specs = tf_keras.layers.InputSpec(shape=[None, None, None, 3])

  inputs = tf_keras.Input(shape=input_specs.shape[1:], name='images')
  x = tf_keras.layers.Conv2D(
      filters=64, kernel_size=7, strides=2, use_bias=False, padding='same',
      kernel_initializer='VarianceScaling', name='conv1_conv')(inputs)
  x = tf_keras.layers.BatchNormalization(
      axis=-1, momentum=norm_momentum, epsilon=norm_epsilon,
      synchronized=use_sync_bn, name='conv1_bn')(x)
  x = tf_keras.layers.Activation('relu', name='conv1')(x)
  endpoints = {'conv1': x}
  x = tf_keras.layers.MaxPool2D(pool_size=3, strides=2, padding='same',
                                name='pool1')(x)

  for stage, (block_type, filters, repeats) in zip(STAGES,
                                                   RESNET_SPECS[depth]):
    stride, _, rate = plan[stage]
    if stage == 'res5':
      rates = _unit_rates(rate, multigrid, repeats)
    else:
      rates = [rate] * repeats
    x = _block_group(x, block_type, filters, stride, rates, name=stage,
                     unit_prefix=stage, **norm_args)
    endpoints[stage] = x

  return tf_keras.Model(inputs=inputs, outputs=endpoints,
                        name=f'resnet{depth}_os{output_stride}')


def build_conv5_block(depth: int,
                      rates: Sequence[int] = (1, 2, 4),
                      *,
                      name: str = 'box_classifier_res5',
                      norm_momentum: float = 0.997,
                      norm_epsilon: float = 1e-5,
                      use_sync_bn: bool = False) -> tf_keras.Model:
  """A duplicate of the backbone's res5 stage for the box classifier.

  MaskLab's box classifier runs "one extra duplicate conv5 block" with its
  own weights on res4 crops of each RoI. As in TF Object Detection API's
  ResNet Faster R-CNN the block runs at stride 1 (the crops were pooled
  before), with unit i at atrous rate rates[i % len(rates)] (paper best:
  (1, 2, 4)). Same units, in the same order, as res5 of `build_backbone`, so
  `load_resnet_checkpoint` can copy ImageNet res5 weights into it.

  Args:
    depth: ResNet depth, as for `build_backbone`.
    rates: atrous rates of the units, cycled.
    name: model name; its units are named f'{name}_unit{i}'.
    norm_momentum: batch norm moving-average momentum.
    norm_epsilon: batch norm epsilon.
    use_sync_bn: synchronise batch statistics across replicas.

  Returns:
    A functional tf_keras.Model: crops [N, h, w, C_res4] -> [N, h, w, C_res5].
  """
  check_depth(depth)
  if not rates:
    raise ValueError('rates must hold at least one rate.')
  block_type, filters, repeats = RESNET_SPECS[depth][-1]
  channels = endpoint_channels(depth)
  inputs = tf_keras.Input(shape=[None, None, channels['res4']],
                          name=f'{name}_crops')
  outputs = _block_group(
      inputs, block_type, filters, 1, _unit_rates(1, rates, repeats),
      name=f'{name}_out', unit_prefix=name,
      **_norm_args(norm_momentum, norm_epsilon, use_sync_bn))
  return tf_keras.Model(inputs=inputs, outputs=outputs, name=name)
