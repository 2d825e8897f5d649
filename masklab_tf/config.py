"""Dataclass configs: the one source of defaults; absl flags map onto them.

Each dataclass field becomes a flag of the same name (`--min_sizes=480,576`),
so a `configs/*.flags` file is a list of field overrides and every value can
also be overridden on the command line. Later issues add the model and
training dataclasses here.
"""

from __future__ import annotations

import dataclasses
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
