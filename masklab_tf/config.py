"""Dataclass configs: the one source of defaults; absl flags map onto them.

Each dataclass field becomes a flag of the same name (`--min_sizes=480,576`),
so a `configs/*.flags` file is a list of field overrides and every value can
also be overridden on the command line. A field that is itself a dataclass
(DataConfig.train and .val, both DataSplitConfig) gives its fields' flags
its own name as a prefix (`--train_annotations`, `--val_images`).

Every fact has one field, and so one flag: defining a flag name twice is an
error (define_flags), never two fields silently fed by one flag. A flag's
`--help` is its field's entry in the `Attributes:` section of its class's
docstring, which therefore lists every field on a line of its own.

Why one file of this length: the four config classes are the one place a
user reads every setting with its meaning; their docstrings are the flags'
help. Splitting them would spread that reference over files.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import typing
from typing import Any

from absl import flags

from masklab_tf import files


@dataclasses.dataclass
class GeometryConfig:
  """Direction geometry shared by targets and direction pooling
  (docs/design.md, "One geometry").

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
class DataSplitConfig:
  """Where one annotated set lives: a COCO json and its images, or TFRecords.

  Attributes:
    annotations: COCO instances json (read when no TFRecords are named).
    images: folder the json's `file_name`s are relative to.
    tfrecords: file pattern of TFRecord shards written by bin/make_tfrecords
      (training only: evaluation scores against a COCO json).
    categories: categories json of the shards (default: the
      `<pattern prefix>.categories.json` bin/make_tfrecords writes beside
      them).
  """
  annotations: str = ''
  images: str = ''
  tfrecords: str = ''
  categories: str = ''


@dataclasses.dataclass
class DataConfig:
  """Input pipeline settings.

  The pipeline also reads two facts owned elsewhere, which its callers pass
  in: the padding multiple is ModelConfig.output_stride (the network's
  stride, so that feature maps tile the padded image) and the seed of
  shuffling and augmentation is TrainConfig.seed.

  Attributes:
    train: the training set (bin/train).
    val: the validation set, evaluated during training (optional; a COCO
      json and its images only).
    min_sizes: training scale jitter: the shortest side is drawn from this
      list (paper, COCO: 480, 576, 688, 800, 930).
    eval_min_size: shortest side at evaluation.
    test_scales: test-time augmentation: factors of the eval size, one
      network pass each (e.g. 0.8,1,1.2), merged per class by NMS with masks
      averaged in image space (postprocess/test_time_augmentation.py); empty
      or 1: one pass. Applies to bin/evaluate, bin/predict --model_dir and
      bin/export.
    test_flip: test-time augmentation: also a mirrored pass at each scale.
    test_box_voting: test-time augmentation: a merged detection's box is
      its cluster's score-weighted mean box (else the best-scoring one's).
    max_size: cap on the longest side after resizing.
    pad_to: fixed padded (height, width) for static shapes (TPU, XLA),
      multiples of the output stride; empty pads each batch to its largest
      image instead.
    flip: random horizontal flip in training.
    max_instances: instances per image after padding; larger ones are kept
      first when an image holds more.
    keep_full_masks: also emit full-image instance masks [M, H, W] (costly at
      COCO scale; for visualisation and tests).
    shuffle_buffer: examples in the shuffle buffer.
    verify_images: 'none', 'header' or 'full' check of images when reading
      COCO json (see data/coco.py).
    allow_outside_images: read images whose file_name leads outside the
      images folder ('../x.png', an absolute path, a link out); by default
      they are skipped as 'outside_images' problems.
  """
  train: DataSplitConfig = dataclasses.field(default_factory=DataSplitConfig)
  val: DataSplitConfig = dataclasses.field(default_factory=DataSplitConfig)
  min_sizes: tuple[int, ...] = (800,)
  eval_min_size: int = 800
  test_scales: tuple[float, ...] = ()
  test_flip: bool = False
  test_box_voting: bool = False
  max_size: int = 1333
  pad_to: tuple[int, ...] = ()
  flip: bool = True
  max_instances: int = 100
  keep_full_masks: bool = False
  shuffle_buffer: int = 256
  verify_images: str = 'header'
  allow_outside_images: bool = False


@dataclasses.dataclass
class ModelConfig:
  """The network (MaskLab sec. 3 and 4.1; TF Object Detection API defaults
  where the paper is silent, since MaskLab was built on it).

  Attributes:
    num_classes: K, object classes without background.
    backbone_depth: ResNet depth: 101, 50 (paper) or 10, 18, 26 (CPU).
    output_stride: stride of res5, 8 (paper) or 16; the input pipeline and
      serving pad image sides to a multiple of it.
    backbone_multigrid: multi-grid of the shared res5 block (semantic and
      direction logits); rates are base rate x these (paper Table 5).
    box_classifier_multigrid: rates of the duplicated res5 block of the box
      classifier (paper best: 1, 2, 4).
    norm_momentum: batch norm momentum of the moving statistics.
    norm_epsilon: batch norm epsilon.
    use_sync_bn: batch norm statistics over all replicas' examples.
    anchor_sizes: RPN anchor sides in pixels (paper: 5 scales).
    anchor_aspect_ratios: width / height of anchors.
    rpn_head_channels: channels of the RPN's 3x3 conv.
    rpn_batch_size_per_image: anchors sampled per image for the RPN losses.
    rpn_positive_fraction: at most this share of the sampled anchors are
      positive; negatives fill the rest.
    rpn_positive_iou: an anchor is positive from this IoU with a box (or as
      a box's best anchor).
    rpn_negative_iou: an anchor is negative below this IoU with every box.
    rpn_pre_nms_top_k: best-scored anchors decoded before the proposals'
      NMS (training and inference).
    rpn_nms_iou: IoU threshold of the proposals' NMS.
    num_proposals: proposals per image in training (paper: 300).
    test_num_proposals: proposals per image at inference (paper: 300).
    roi_crop_size: RoI crop side on res4 before 2x2 max pooling (TF OD API:
      14 -> 7).
    deformable_crop: MaskLab's deformable crop-and-resize for the box
      classifier.
    num_sampled_rois: RoIs sampled per image to train the box classifier.
    roi_foreground_fraction: at most this share of the sampled RoIs are
      foreground.
    roi_foreground_iou: a RoI is foreground from this IoU with a box.
    mask_head: the system to build (modeling/systems/registry.py): a mask
      head of the Faster R-CNN family ('masklab', 'fcis', 'biseg'), MaskLab's
      ablations ('masklab_semantic_only', 'masklab_direction_only') or
      'instancefcn' (class-agnostic segment proposals, no box branch).
    mask_features: the masklab head's features: 'both', 'semantic' or
      'direction' (paper Table 2); other heads refuse anything but 'both'.
    refine: the masklab head's hypercolumn refinement on or off (paper
      Table 4); heads without refinement refuse --refine=false.
    refine_features: the backbone endpoints whose features the masklab
      head's refinement crops beside the coarse mask, of conv1, res2, res3
      (paper Table 4: conv1 + res2 best, res3 adds nothing); other heads
      refuse anything but the default.
    hypercolumn_channels: if > 0, a 1x1 conv reduces each refine_features
      endpoint to this many channels on the whole image before cropping
      (cheaper refinement at many detections); 0 crops them whole (paper).
    refine_filters: filters of the three 5x5 refinement convs (paper: 64).
    semantic_head: 'conv1x1' (MaskLab) or 'aspp' (the output-fusion paper's
      atrous pyramid, rates 6, 12, 18, 128 filters) for the semantic logits.
    ps_grid_size: position-sensitive heads (fcis, biseg): k x k cells of the
      res5 score maps (paper: 7).
    ps_grid_size_fine: BiSeg: k x k cells of its res3 score maps (paper: 9).
    ps_feature_channels: position-sensitive heads: channels of the 1x1
      reduction of res5 (1024).
    ifcn_grid_size: InstanceFCN (--mask_head=instancefcn,
      modeling/systems/instancefcn.py): k x k instance-sensitive maps
      (paper: 5).
    ifcn_window_sizes: InstanceFCN: sliding-window sides in image pixels
      (default: the paper's 168 px window seen at its six pyramid scales
      600 x 1.5^{-4..1}).
    ifcn_channels: InstanceFCN: channels of its 512-d convs.
    ifcn_crop_size: InstanceFCN: resolution m of an assembled window (21).
    ifcn_windows_per_image: InstanceFCN: windows sampled per training image
      (256).
    ifcn_pre_nms_top_k: InstanceFCN: best-scored windows assembled at
      inference, before NMS.
    ifcn_nms_iou: InstanceFCN: NMS IoU on the segments' tight boxes (0.8);
      max_detections segment proposals are kept per image.
    semantic_loss_weight: weight of an optional dense semantic loss (0 =
      off: the paper trains the semantic logits through the masks).
    direction_loss_weight: weight of an optional dense direction loss (0 =
      off: the paper trains the direction logits through the masks).
    max_detections: detections per image at inference.
    detection_nms_iou: IoU threshold of the detections' per-class NMS.
    detection_score_threshold: detections scored below this are dropped.
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
  refine_features: tuple[str, ...] = ('conv1', 'res2')
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
    strategy: 'default' (one device), 'mirrored' (all local GPUs, or
      num_cpu_replicas logical CPUs), 'multi_worker_mirrored' (TF_CONFIG),
      'tpu'.
    tpu: TPU address for the 'tpu' strategy.
    num_cpu_replicas: with 'mirrored' and no GPU, split the CPU into this
      many logical devices (tests, and reproducing multi-device runs).
    batch_size: global batch, split across replicas.
    train_steps: total optimizer steps.
    learning_rate: peak learning rate, reached after the warmup.
    warmup_steps: steps of linear warmup from 0.
    lr_schedule: 'cosine' (to 0 at train_steps) or 'step' (lr_decay_steps,
      lr_decay_rate).
    lr_decay_steps: steps at which the 'step' schedule multiplies the
      learning rate by lr_decay_rate.
    lr_decay_rate: factor of each 'step' decay.
    momentum: SGD momentum.
    weight_decay: L2 on kernels.
    clip_norm: global gradient-norm clipping (0 = off).
    mixed_precision: '', 'mixed_bfloat16', 'mixed_float16' (with dynamic
      loss scaling) or 'auto' (mixed_bfloat16 on TPUs, Ampere+ GPUs and
      CPUs with oneDNN bfloat16 units, float32 elsewhere:
      modeling/precision.py): the model's compute dtype wherever it is built
      (training, bin/evaluate, bin/export, load_model).
    max_bad_steps: stop after this many non-finite steps in a row.
    checkpoint_every: steps between checkpoints.
    keep_checkpoints: checkpoints kept (the best one apart).
    log_every: a progress line every this many steps.
    image_summary_every: TensorBoard images with predictions (0 = off).
    eval_every: COCO evaluation on the val set (0 = only at the end).
    init_checkpoint: weights to start from (a checkpoint prefix or its
      folder): a Model Garden ImageNet ResNet (backbone and the box
      classifier's conv5) or a bin/train run's checkpoint (every weight
      whose name and shape agree, e.g. the semantic-segmentation stage's
      backbone and semantic logits: --mask_head=semantic_segmentation);
      the run writes what matched into MODEL_DIR/init_checkpoint.json.
    seed: global seed: weight initialisation, the samplers' generators,
      shuffling and augmentation.
    deterministic: repeatable runs (masklab_tf/determinism.py): the same
      seed on the same machine gives bit-identical losses and weights, on
      one device and under `mirrored`, resumed or not; the input pipeline
      keeps its order and resumes where the checkpoint was; TensorFlow's
      kernels are made deterministic and the assembling layer trains
      without XLA. bin/evaluate takes it too (deterministic kernels).
  """
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
  deterministic: bool = False


class Configs(typing.NamedTuple):
  data: DataConfig
  geometry: GeometryConfig
  model: ModelConfig
  train: TrainConfig


CONFIG_CLASSES = (DataConfig, GeometryConfig, ModelConfig, TrainConfig)


def _field_type(cls: type, field: dataclasses.Field) -> Any:
  return typing.get_type_hints(cls)[field.name]


_ATTRIBUTE = re.compile(r'(\w+): (.+)')


def field_helps(cls: type) -> dict[str, str]:
  """Field name -> its entry in the `Attributes:` section of `cls`'s
  docstring, joined onto one line (the flag's --help).

  Entries are `name: text` at the section's indentation, continued on more
  deeply indented lines; the section ends at a blank or less indented line.

  Raises:
    ValueError: a line at entry indentation is not `name: text`, so that a
      malformed docstring fails loudly instead of losing help texts.
  """
  lines = inspect.cleandoc(cls.__doc__ or '').splitlines()
  if 'Attributes:' not in lines:
    return {}
  helps, name, indent = {}, None, None
  for line in lines[lines.index('Attributes:') + 1:]:
    depth = len(line) - len(line.lstrip())
    if not line.strip() or (indent is not None and depth < indent):
      break
    indent = depth if indent is None else indent
    if depth == indent:
      match = _ATTRIBUTE.fullmatch(line.strip())
      if not match:
        raise ValueError(f'{cls.__name__} docstring, Attributes: '
                         f'{line.strip()!r} is not "field: text"')
      name = match.group(1)
      helps[name] = match.group(2)
    else:
      helps[name] += ' ' + line.strip()
  return helps


def define_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS,
                 prefix: str = '') -> None:
  """Defines one absl flag per field of dataclass `cls`, named prefix +
  field name; a dataclass-typed field defines its class's flags under the
  prefix `<name>_`, their help led by the field's own.

  Raises:
    flags.DuplicateFlagError: a flag of one of these names exists already
      (another config's field, or a tool's own flag): one flag feeding two
      fields, or a tool's value shadowing a config's, is what this refuses.
    ValueError: a field has no entry in its class docstring's Attributes.
  """
  _define_flags(cls, flag_values, prefix, '', cls.__name__)


def _define_flags(cls: type, flag_values: flags.FlagValues, prefix: str,
                  help_prefix: str, owner: str) -> None:
  """define_flags, for `cls` reached as `owner` (e.g. DataConfig.train)."""
  helps = field_helps(cls)
  for field in dataclasses.fields(cls):
    name = prefix + field.name
    if field.name not in helps:
      raise ValueError(f'{cls.__name__}.{field.name} has no entry in the '
                       'Attributes: section of its docstring (the help of '
                       f'--{name})')
    help_text = help_prefix + helps[field.name]
    kind = _field_type(cls, field)
    if dataclasses.is_dataclass(kind):
      _define_flags(kind, flag_values, f'{name}_',
                    f'{help_text.rstrip(".")}: ', f'{owner}.{field.name}')
      continue
    if name in flag_values:
      module = flag_values.find_module_defining_flag(name, 'another module')
      raise flags.DuplicateFlagError(
          f'--{name} is defined twice: by {module} ("{flag_values[name].help}")'
          f' and as {owner}.{field.name}. One flag, one field: rename one of '
          'them, or have the tool read the config field.')
    default = field.default
    if default is dataclasses.MISSING:
      default = field.default_factory()  # type: ignore[misc]
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
    name = prefix + field.name
    kind = _field_type(cls, field)
    if dataclasses.is_dataclass(kind):
      values[field.name] = from_flags(kind, flag_values, f'{name}_')
      continue
    value = flag_values[name].value
    if typing.get_origin(kind) is tuple:
      (item_type, _) = (typing.get_args(kind) + (None,))[:2]
      value = tuple(item_type(v) for v in value)
    values[field.name] = value
  return cls(**values)


def define_all_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Flags of every config dataclass (what a configs/*.flags file sets)."""
  for cls in CONFIG_CLASSES:
    define_flags(cls, flag_values)


def all_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Configs:
  return Configs(*(from_flags(cls, flag_values) for cls in CONFIG_CLASSES))


def flag_values_of(configs: Configs) -> dict[str, Any]:
  """Flag name -> value for every field of `configs` (the inverse of
  all_from_flags: `--train_annotations` is data.train.annotations)."""
  values = {}

  def walk(value, prefix):
    for field in dataclasses.fields(value):
      item = getattr(value, field.name)
      if dataclasses.is_dataclass(item):
        walk(item, f'{prefix}{field.name}_')
      else:
        values[prefix + field.name] = item

  for section in configs:
    walk(section, '')
  return values


def replace_flags(configs: Configs, values: dict[str, Any]) -> Configs:
  """`configs` with the fields of the flags named in `values` set to them
  (list flags may give strings: converted as from_flags does)."""
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(['configs'])
  for name, value in {**flag_values_of(configs), **values}.items():
    flag_values[name].value = (list(value) if isinstance(value, tuple)
                               else value)
  return all_from_flags(flag_values)


def from_flagfile(path: str, overrides: tuple[str, ...] = ()) -> Configs:
  """The configs of a flags file (plus `--name=value` overrides), parsed in
  a private FlagValues so that it never touches the program's own flags."""
  flag_values = flags.FlagValues()
  define_all_flags(flag_values)
  flag_values(['configs', f'--flagfile={path}', *overrides])
  return all_from_flags(flag_values)


CONFIGS_FILE = 'configs.json'


def to_json(configs: Configs, path: str) -> None:
  """Writes every config (bin/train leaves it in the model directory).

  Atomically: a temporary file in the same folder replaces `path`, so a
  reader (or a kill mid-write) never sees a half-written file.
  """
  files.write_json(path, {name: dataclasses.asdict(value)
                          for name, value in configs._asdict().items()},
                   indent=1)


def from_json(path: str) -> Configs:
  """Configs written by `to_json`, in today's layout or the one before
  DataSplitConfig (_upgrade_layout); fields the file lacks keep their
  defaults."""
  with open(path) as f:
    saved = _upgrade_layout(json.load(f))
  return Configs(*(_from_dict(cls, saved.get(name, {}))
                   for name, cls in zip(Configs._fields, CONFIG_CLASSES)))


def _from_dict(cls: type, saved: dict) -> Any:
  values = {}
  for field in dataclasses.fields(cls):
    if field.name not in saved:
      continue
    value = saved[field.name]
    kind = _field_type(cls, field)
    if dataclasses.is_dataclass(kind):
      value = _from_dict(kind, value)
    elif typing.get_origin(kind) is tuple:
      value = tuple(value)
    values[field.name] = value
  return cls(**values)


# Training and validation sets in configs.json files written before
# DataSplitConfig: (section, old key) -> (DataConfig split, its field).
_OLD_SPLIT_KEYS = {
    ('train', 'train_annotations'): ('train', 'annotations'),
    ('train', 'train_images'): ('train', 'images'),
    ('train', 'train_tfrecords'): ('train', 'tfrecords'),
    ('data', 'categories'): ('train', 'categories'),
    ('train', 'val_annotations'): ('val', 'annotations'),
    ('train', 'val_images'): ('val', 'images'),
}


def _upgrade_layout(saved: dict) -> dict:
  """Maps a configs.json of the layout before each fact had one field
  onto today's; a file of today's layout passes unchanged.

  That layout had data.output_stride and data.seed, copies of
  model.output_stride and train.seed set by the same flag;
  data.deterministic, which governed the input pipeline alone before it
  made the whole run repeatable (train.deterministic); the sets in
  train.train_* and train.val_*; and data.annotations, images, tfrecords
  and categories, of which the trainer read only categories (for the
  training TFRecords): it replaced the other three with train.train_*, so
  they never described the run and are dropped.
  """
  saved = {name: dict(section) for name, section in saved.items()}
  data = saved.setdefault('data', {})
  train = saved.setdefault('train', {})
  model = saved.setdefault('model', {})
  if 'output_stride' in data:
    model.setdefault('output_stride', data.pop('output_stride'))
  if 'seed' in data:
    train.setdefault('seed', data.pop('seed'))
  if 'deterministic' in data:
    train.setdefault('deterministic', data.pop('deterministic'))
  for (section, key), (split, field) in _OLD_SPLIT_KEYS.items():
    if key in saved[section]:
      value = saved[section].pop(key)
      data.setdefault(split, {}).setdefault(field, value)
  for key in ('annotations', 'images', 'tfrecords'):
    data.pop(key, None)
  return saved
