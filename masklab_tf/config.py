"""Dataclass configs: the one source of defaults; absl flags map onto them.

Each dataclass field becomes a flag of the same name (`--min_sizes=480,576`),
so a `configs/*.flags` file is a list of field overrides and every value can
also be overridden on the command line. Later issues add the model and
training dataclasses here.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from absl import flags


@dataclasses.dataclass
class GeometryConfig:
  """Direction geometry shared by targets and direction pooling (DESIGN.md).

  Attributes:
    num_directions: D, angular bins over 360 degrees (paper: 8).
    num_distance_bins: R, radial bins within each direction (paper: 4).
    mask_crop_size: S, side of the box-relative mask crop (paper: 41).
  """
  num_directions: int = 8
  num_distance_bins: int = 4
  mask_crop_size: int = 41

  @property
  def num_direction_channels(self) -> int:
    return self.num_directions * self.num_distance_bins


@dataclasses.dataclass
class DataConfig:
  """Input pipeline settings.

  Attributes:
    annotations: COCO instances json (used when `tfrecords` is empty).
    images: folder the json's `file_name`s are relative to.
    tfrecords: file pattern of TFRecord shards written by bin/make_tfrecords.
    categories: categories json written beside the shards (defaults to
      `<pattern prefix>.categories.json`).
    min_sizes: training scale jitter: the shortest side is drawn from this
      list (paper, COCO: 480, 576, 688, 800, 930).
    eval_min_size: shortest side at evaluation.
    max_size: cap on the longest side after resizing.
    output_stride: padded image sides are multiples of this.
    pad_to: fixed padded (height, width) for static shapes (TPU, XLA);
      empty pads each batch to its largest image instead.
    flip: random horizontal flip in training.
    max_instances: instances per image after padding; larger ones are kept
      first when an image holds more.
    keep_full_masks: also emit full-image instance masks [M, H, W] (costly at
      COCO scale; for visualisation and tests).
    shuffle_buffer: examples in the shuffle buffer.
    deterministic: same seed, same batches, whatever the parallelism.
    seed: seed of shuffling and augmentation.
    verify_images: 'none', 'header' or 'full' check of images when reading
      COCO json (see data/coco.py).
  """
  annotations: str = ''
  images: str = ''
  tfrecords: str = ''
  categories: str = ''
  min_sizes: tuple[int, ...] = (800,)
  eval_min_size: int = 800
  max_size: int = 1333
  output_stride: int = 8
  pad_to: tuple[int, ...] = ()
  flip: bool = True
  max_instances: int = 100
  keep_full_masks: bool = False
  shuffle_buffer: int = 256
  deterministic: bool = False
  seed: int = 0
  verify_images: str = 'header'


def _field_type(cls: type, field: dataclasses.Field) -> Any:
  return typing.get_type_hints(cls)[field.name]


def define_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS,
                 prefix: str = '') -> None:
  """Defines one absl flag per field of dataclass `cls` (skips existing)."""
  for field in dataclasses.fields(cls):
    name = prefix + field.name
    if name in flag_values:
      continue
    default = field.default
    if default is dataclasses.MISSING:
      default = field.default_factory()  # type: ignore[misc]
    kind = _field_type(cls, field)
    help_text = f'{cls.__name__}.{field.name}'
    if kind is bool:
      flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
    elif kind is int:
      flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
    elif kind is float:
      flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
    elif kind is str:
      flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
    elif typing.get_origin(kind) is tuple:
      flags.DEFINE_list(name, [str(v) for v in default], help_text,
                        flag_values=flag_values)
    else:
      raise TypeError(f'{cls.__name__}.{field.name}: no flag for type {kind}')


def from_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS,
               prefix: str = '') -> Any:
  """Builds a `cls` instance from parsed flags defined by `define_flags`."""
  values = {}
  for field in dataclasses.fields(cls):
    value = flag_values[prefix + field.name].value
    kind = _field_type(cls, field)
    if typing.get_origin(kind) is tuple:
      (item_type, _) = (typing.get_args(kind) + (None,))[:2]
      value = tuple(item_type(v) for v in value)
    values[field.name] = value
  return cls(**values)


@dataclasses.dataclass
class ModelConfig:
  """The network (MaskLab sec. 3 and 4.1; TF Object Detection API defaults
  where the paper is silent, since MaskLab was built on it).

  Attributes:
    num_classes: K, object classes without background.
    backbone_depth: ResNet depth: 101, 50 (paper) or 10, 18, 26 (CPU).
    output_stride: 8 (paper) or 16.
    backbone_multigrid: multi-grid of the shared res5 block (semantic and
      direction logits); rates are base rate x these (paper Table 5).
    box_classifier_multigrid: rates of the duplicated res5 block of the box
      classifier (paper best: 1, 2, 4).
    norm_momentum, norm_epsilon, use_sync_bn: batch norm.
    anchor_sizes: RPN anchor sides in pixels (paper: 5 scales).
    anchor_aspect_ratios: width / height of anchors.
    rpn_head_channels: channels of the RPN's 3x3 conv.
    rpn_batch_size_per_image, rpn_positive_fraction, rpn_positive_iou,
      rpn_negative_iou: RPN anchor sampling and matching.
    rpn_pre_nms_top_k, rpn_nms_iou, num_proposals, test_num_proposals:
      proposal generation (paper: 300 proposals).
    roi_crop_size: RoI crop side on res4 before 2x2 max pooling (TF OD API:
      14 -> 7).
    deformable_crop: MaskLab's deformable crop-and-resize for the box
      classifier.
    num_sampled_rois, roi_foreground_fraction, roi_foreground_iou: RoIs
      sampled per image to train the box classifier.
    mask_head: name in the mask-head registry (modeling/mask_heads.py), or
      'instancefcn' (class-agnostic segment proposals, a model of its own:
      modeling/factory.py).
    mask_features: 'both', 'semantic' or 'direction' (paper Table 2).
    refine: hypercolumn refinement on or off (paper Table 4).
    hypercolumn_channels: if > 0, a 1x1 conv reduces conv1 and res2 to this
      many channels each on the whole image before cropping (cheaper refinement
      at many detections); 0 crops them whole (paper).
    refine_filters: filters of the three 5x5 refinement convs (paper: 64).
    semantic_head: 'conv1x1' (MaskLab) or 'aspp' (the output-fusion paper's
      atrous pyramid, rates 6, 12, 18, 128 filters) for the semantic logits.
    ps_grid_size, ps_grid_size_fine, ps_feature_channels: position-sensitive
      heads (fcis, biseg): k x k cells of the res5 score maps (paper: 7),
      of BiSeg's res3 maps (9), and the 1x1 reduction of res5 (1024).
    ifcn_*: InstanceFCN (--mask_head=instancefcn, modeling/instancefcn.py):
      k x k instance-sensitive maps (paper: 5); window sides in image pixels
      (default: the paper's 168 px window seen at its six pyramid scales
      600 x 1.5^{-4..1}); channels of its 512-d convs; assembled window
      resolution m (21); windows sampled per training image (256);
      windows assembled at inference before NMS; NMS IoU on the segments'
      tight boxes (0.8). Its proposals per image are max_detections.
    semantic_loss_weight, direction_loss_weight: optional dense auxiliary
      losses (0 = off: the paper trains both branches through the masks).
    max_detections, detection_nms_iou, detection_score_threshold: inference.
    kernel_rewrites: 'auto' (the convolution layers reach other kernels,
      same weights and function, on the CPU hosts where that was measured
      to pay; never with a GPU or TPU: modeling/layers/kernel_rewrites.py)
      or 'off' (plain tf_keras convolutions). Checkpoints move between
      the two.
  """
  num_classes: int = 80
  backbone_depth: int = 101
  output_stride: int = 8
  backbone_multigrid: tuple[int, ...] = (1, 2, 1)
  box_classifier_multigrid: tuple[int, ...] = (1, 2, 4)
  norm_momentum: float = 0.997
  norm_epsilon: float = 1e-5
  use_sync_bn: bool = False
  anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
  anchor_aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
  rpn_head_channels: int = 512
  rpn_batch_size_per_image: int = 256
  rpn_positive_fraction: float = 0.5
  rpn_positive_iou: float = 0.7
  rpn_negative_iou: float = 0.3
  rpn_pre_nms_top_k: int = 6000
  rpn_nms_iou: float = 0.7
  num_proposals: int = 300
  test_num_proposals: int = 300
  roi_crop_size: int = 14
  deformable_crop: bool = False
  num_sampled_rois: int = 64
  roi_foreground_fraction: float = 0.25
  roi_foreground_iou: float = 0.5
  mask_head: str = 'masklab'
  mask_features: str = 'both'
  refine: bool = True
  hypercolumn_channels: int = 0
  refine_filters: int = 64
  semantic_head: str = 'conv1x1'
  ps_grid_size: int = 7
  ps_grid_size_fine: int = 9
  ps_feature_channels: int = 1024
  ifcn_grid_size: int = 5
  ifcn_window_sizes: tuple[float, ...] = (112.0, 168.0, 252.0, 378.0,
                                          567.0, 850.0)
  ifcn_channels: int = 512
  ifcn_crop_size: int = 21
  ifcn_windows_per_image: int = 256
  ifcn_pre_nms_top_k: int = 2000
  ifcn_nms_iou: float = 0.8
  semantic_loss_weight: float = 0.0
  direction_loss_weight: float = 0.0
  max_detections: int = 100
  detection_nms_iou: float = 0.6
  detection_score_threshold: float = 0.0
  kernel_rewrites: str = 'auto'


@dataclasses.dataclass
class TrainConfig:
  """Training (bin/train). The paper trains with SGD + momentum (TF Object
  Detection API); this adds warmup and cosine or step decay.

  Attributes:
    train_annotations, train_images, train_tfrecords: training data (COCO
      json + image folder, or a TFRecord pattern).
    val_annotations, val_images: validation data for evaluation during
      training (optional).
    strategy: 'default' (one device), 'mirrored' (all local GPUs, or
      num_cpu_replicas logical CPUs), 'multi_worker_mirrored' (TF_CONFIG),
      'tpu'.
    tpu: TPU address for the 'tpu' strategy.
    num_cpu_replicas: with 'mirrored' and no GPU, split the CPU into this
      many logical devices (tests, and reproducing multi-device runs).
    batch_size: global batch, split across replicas.
    train_steps: total optimizer steps.
    learning_rate, warmup_steps, lr_schedule ('cosine' | 'step'),
      lr_decay_steps, lr_decay_rate: schedule; step decay multiplies by
      lr_decay_rate at each boundary in lr_decay_steps.
    momentum, weight_decay (L2 on kernels), clip_norm (global, 0 = off).
    mixed_precision: '', 'mixed_bfloat16', 'mixed_float16' (with dynamic
      loss scaling) or 'auto' (mixed_bfloat16 on TPUs, Ampere+ GPUs and
      CPUs with oneDNN bfloat16 units, float32 elsewhere:
      modeling/precision.py): the model's compute dtype wherever it is built
      (training, bin/evaluate, bin/export, load_model).
    max_bad_steps: stop after this many non-finite steps in a row.
    checkpoint_every, keep_checkpoints: checkpoint cadence and retention.
    log_every: a progress line every this many steps.
    image_summary_every: TensorBoard images with predictions (0 = off).
    eval_every: COCO evaluation on the val set (0 = only at the end).
    init_checkpoint: ImageNet ResNet checkpoint for the backbone.
    seed: global seed.
  """
  train_annotations: str = ''
  train_images: str = ''
  train_tfrecords: str = ''
  val_annotations: str = ''
  val_images: str = ''
  strategy: str = 'default'
  tpu: str = ''
  num_cpu_replicas: int = 1
  batch_size: int = 4
  train_steps: int = 1000
  learning_rate: float = 0.02
  warmup_steps: int = 100
  lr_schedule: str = 'cosine'
  lr_decay_steps: tuple[int, ...] = ()
  lr_decay_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 1e-4
  clip_norm: float = 10.0
  mixed_precision: str = ''
  max_bad_steps: int = 20
  checkpoint_every: int = 200
  keep_checkpoints: int = 3
  log_every: int = 20
  image_summary_every: int = 200
  eval_every: int = 0
  init_checkpoint: str = ''
  seed: int = 0



class Configs(typing.NamedTuple):
  data: DataConfig
  geometry: GeometryConfig
  model: ModelConfig
  train: TrainConfig


CONFIG_CLASSES = (DataConfig, GeometryConfig, ModelConfig, TrainConfig)


def define_all_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Flags of every config dataclass (what a configs/*.flags file sets)."""
  for cls in CONFIG_CLASSES:
    define_flags(cls, flag_values)


def all_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Configs:
  return Configs(*(from_flags(cls, flag_values) for cls in CONFIG_CLASSES))


def from_flagfile(path: str, overrides: tuple[str, ...] = ()) -> Configs:
  """The configs of a flags file (plus `--name=value` overrides), parsed in
  a private FlagValues so that it never touches the program's own flags."""
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(['configs', f'--flagfile={path}', *overrides])
  return all_from_flags(flag_values)


CONFIGS_FILE = 'configs.json'


def to_json(configs: Configs, path: str) -> None:
  """Writes every config (bin/train leaves it in the model directory)."""
  with open(path, 'w') as f:
    json.dump({name: dataclasses.asdict(value)
               for name, value in configs._asdict().items()}, f, indent=1)


def from_json(path: str) -> Configs:
  """Configs written by `to_json`; fields it lacks keep their defaults."""
  with open(path) as f:
    saved = json.load(f)
  parts = []
  for name, cls in zip(Configs._fields, CONFIG_CLASSES):
    values = {}
    for field in dataclasses.fields(cls):
      if field.name in saved.get(name, {}):
        value = saved[name][field.name]
        if typing.get_origin(_field_type(cls, field)) is tuple:
          value = tuple(value)
        values[field.name] = value
    parts.append(cls(**values))
  return Configs(*parts)
