"""COCO instance annotations: read, validate, repair what is safe, report.

Real COCO-style datasets contain broken entries (missing files, degenerate
polygons, annotation id 0, boxes hanging over the border, ...). Training and
evaluation must never see them, and the user must be told exactly what was
dropped or changed. So the reader never raises on a bad *entry*: it records a
`Problem` and keeps the good data. Only a json that cannot be read at all (or
strict mode) raises `DatasetError`.

No TensorFlow here: light command-line tools and evaluation use this module.

Why one file of this length: every check of an entry (image, annotation,
category, segmentation) and the problem it records belong to one reader
that must never lie; split, a check could be bypassed by a path that reads
entries another way.
"""

import dataclasses
import json
import math
import os
import reprlib
import warnings

import numpy as np
from PIL import Image
from PIL import ImageFile
from pycocotools import mask as mask_utils

VERIFY_MODES = ('none', 'header', 'full')

# COCOeval's headline AP uses maxDets=100, so more ground truth than that in
# one image caps the reachable recall.
MANY_INSTANCES = 100

# pycocotools stores run lengths as uint32: a mask holds < 2**32 pixels.
MAX_MASK_PIXELS = 2**32 - 1
MAX_IMAGE_SIDE = 100_000

# pycocotools rasterises polygons at 5x scale with C ints; vertices this many
# image sides away are broken data that would overflow or exhaust memory.
POLYGON_REACH = 4

MAX_PROBLEMS_IN_MESSAGE = 20

# What each kind of note means, said once per kind by reports (report.py):
# (what one note counts, the explanation).
NOTE_KINDS = {
    'background_category': (
        'category', 'category id 0 is reserved for background (labelme\'s '
        'COCO export writes _background_ there); the category is skipped, '
        'annotations that use it are problems'),
    'converted_image': (
        'image', 'images not stored as 8-bit RGB are converted on every '
        'read (16-bit keeps the high byte, alpha is dropped)'),
    'many_instances': (
        'image', f'images with more than {MANY_INSTANCES} instances: '
        f'COCOeval\'s headline AP counts at most {MANY_INSTANCES} '
        'detections per image, so their recall is capped; training keeps '
        'the largest max_instances of them'),
    'outside_images': (
        'image', 'images outside the images folder, read because '
        'allow_outside_images is set'),
}

_SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')

# Bad values are quoted in messages; huge or deeply nested ones stay short.
_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 2, 4, 3
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _SHORT_REPR.maxlong = 30


class DatasetError(ValueError):
  """The dataset is unusable: unreadable json, or problems in strict mode."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """An entry that was skipped or repaired (in `notes`: a harmless fact)."""

  kind: str  # machine key, e.g. 'missing_image'
  file: str  # image path for image problems, else the annotations json
  record: str  # 'image 12', 'annotation 7', 'annotation #3' (list index)
  reason: str
  action: str  # what the reader did, e.g. 'skipped annotation'

  def __str__(self):
    return f'{self.file}: {self.record}: {self.reason} ({self.action})'


@dataclasses.dataclass(frozen=True)
class Category:
  id: int  # raw COCO id
  name: str
  index: int  # contiguous 1..K in order of increasing id; 0 is background


@dataclasses.dataclass
class Instance:
  annotation_id: int  # >= 1 and unique after renumbering
  category_id: int  # raw COCO id
  class_index: int  # contiguous 1..K
  box: tuple[float, float, float, float]  # COCO [x, y, w, h], clipped
  rle: dict  # compressed RLE {'size': [h, w], 'counts': bytes}
  area: float  # mask pixel count
  is_crowd: bool


@dataclasses.dataclass
class ImageRecord:
  image_id: int
  file_name: str
  path: str  # os.path.join(images_dir, file_name)
  height: int
  width: int
  mode: str  # Pillow mode on disk; '' when not verified
  instances: list[Instance]


@dataclasses.dataclass
class CocoDataset:
  """The cleaned dataset plus all that was skipped, repaired or noticed."""

  annotations_path: str
  images_dir: str
  categories: list[Category]  # sorted by id
  records: list[ImageRecord]  # kept images, in json order
  problems: list[Problem]  # data that was skipped or repaired
  notes: list[Problem]  # harmless facts: converted or crowded images
  # Images may lie outside images_dir (read_coco's allow_outside_images).
  allow_outside_images: bool = False

  @property
  def num_instances(self) -> int:
    return sum(len(record.instances) for record in self.records)

  @property
  def num_classes(self) -> int:
    return len(self.categories)

  @property
  def max_instances_per_image(self) -> int:
    """Evaluation sets COCOeval's maxDets from this."""
    return max((len(record.instances) for record in self.records), default=0)

  def problem_counts(self) -> dict[str, int]:
    return _count_kinds(self.problems)

  def note_counts(self) -> dict[str, int]:
    return _count_kinds(self.notes)

  def category_by_id(self) -> dict[int, Category]:
    return {category.id: category for category in self.categories}

  def load_image(self, record: ImageRecord) -> np.ndarray:
    """Decodes the image as uint8 [H, W, 3] whatever its mode on disk."""
    if not self.allow_outside_images:
      # Checked again here: a link can change after the reader checked it.
      outside = outside_folder(self.images_dir, record.path)
      if outside:
        raise DatasetError(f'{record.path}: image {record.image_id}: '
                           f'{outside}')
    try:
      with Image.open(record.path) as image:
        image.load()
        pixels = _to_rgb_uint8(image)
    except Exception as error:  # Pillow raises many types on bad bytes.
      raise DatasetError(f'{record.path}: image {record.image_id}: cannot '
                         f'decode image: {error}') from error
    if pixels.shape[:2] != (record.height, record.width):
      raise DatasetError(
          f'{record.path}: image {record.image_id}: file is '
          f'{pixels.shape[0]}x{pixels.shape[1]} but the json says '
          f'{record.height}x{record.width} (height x width)')
    return pixels

  def load_masks(self, record: ImageRecord,
                 instances: list[Instance] | None = None) -> np.ndarray:
    """Decodes uint8 0/1 masks [N, H, W] of `instances` (default: the
    record's), in their order."""
    instances = record.instances if instances is None else instances
    if not instances:
      return np.zeros((0, record.height, record.width), np.uint8)
    masks = mask_utils.decode([instance.rle for instance in instances])
    return np.ascontiguousarray(np.transpose(masks, (2, 0, 1)), np.uint8)

  def to_coco_dict(self) -> dict:
    """The cleaned json, safe as COCOeval ground truth (ids >= 1, unique)."""
    images, annotations = [], []
    for record in self.records:
      images.append({'id': record.image_id, 'file_name': record.file_name,
                     'height': record.height, 'width': record.width})
      annotations += [_annotation_dict(record, instance)
                      for instance in record.instances]
    categories = [{'id': category.id, 'name': category.name}
                  for category in self.categories]
    return {'images': images, 'annotations': annotations,
            'categories': categories}


def read_coco(annotations_path: str, images_dir: str, *,
              strict: bool = False,
              verify_images: str = 'header',
              allow_outside_images: bool = False) -> CocoDataset:
  """Reads a COCO instances json and its images; skips and reports bad data.

  Args:
    annotations_path: the COCO instances json.
    images_dir: folder the images' file_name values are relative to.
    strict: raise DatasetError listing every problem instead of skipping.
    verify_images: 'none' trusts the json sizes; 'header' opens each image
      (exists, is an image, size, mode); 'full' also decodes every pixel,
      which catches truncated or corrupt files.
    allow_outside_images: read images whose file_name resolves (symbolic
      links followed) outside `images_dir`, as '../x.png' or an absolute
      path does; by default they are skipped as 'outside_images', so a json
      cannot make training read, or bin/make_tfrecords copy, any file the
      user can read.
  """
  data = _load_json(annotations_path)
  return read_coco_dict(data, images_dir, annotations_path=annotations_path,
                        strict=strict, verify_images=verify_images,
                        allow_outside_images=allow_outside_images)


def read_coco_dict(data, images_dir: str, *,
                   annotations_path: str = '<dict>', strict: bool = False,
                   verify_images: str = 'header',
                   allow_outside_images: bool = False) -> CocoDataset:
  """`read_coco` for parsed json; `annotations_path` only names it."""
  if verify_images not in VERIFY_MODES:
    raise ValueError(f'verify_images must be one of {VERIFY_MODES}, '
                     f'got {verify_images!r}')
  sections = _top_level_sections(data, annotations_path)
  reader = _Reader(annotations_path, images_dir, verify_images,
                   allow_outside_images)
  dataset = reader.read(*sections)
  if strict and dataset.problems:
    raise DatasetError(_problems_message(annotations_path, dataset.problems))
  return dataset


class _Skip(Exception):
  """Internal: the entry being parsed is unusable for the stated reason."""

  def __init__(self, kind, reason):
    super().__init__(reason)
    self.kind = kind
    self.reason = reason


class _Reader:
  """One validation pass: where problems go, and the json's location."""

  def __init__(self, annotations_path, images_dir, verify_images,
               allow_outside_images):
    self.annotations_path = annotations_path
    self.images_dir = images_dir
    self.verify_images = verify_images
    self.allow_outside_images = allow_outside_images
    self.problems = []
    self.notes = []

  def read(self, image_entries, annotation_entries,
           category_entries) -> CocoDataset:
    categories, skipped_category_ids = self._read_categories(category_entries)
    records, skipped_images = self._read_images(image_entries)
    self._read_annotations(annotation_entries, records, skipped_images,
                           {category.id: category for category in categories},
                           skipped_category_ids)
    self._note_crowded_images(records.values())
    return CocoDataset(self.annotations_path, self.images_dir, categories,
                       list(records.values()), self.problems, self.notes,
                       self.allow_outside_images)

  def _report(self, kind, file, record, reason, action):
    self.problems.append(Problem(kind, file, record, reason, action))

  def _note(self, kind, file, record, reason, action):
    self.notes.append(Problem(kind, file, record, reason, action))

  # Categories ---------------------------------------------------------------

  def _read_categories(self, entries):
    """Returns (categories sorted by id and indexed 1..K, dropped ids)."""
    names, dropped_ids = {}, set()
    for position, entry in enumerate(entries):
      label = _entry_label('category', position, entry)
      if not isinstance(entry, dict) or not _is_int(entry.get('id')):
        self._report('invalid_field', self.annotations_path, label,
                     'category entry is not an object with an integer "id"',
                     'skipped category')
      elif entry['id'] == 0:
        # labelme's COCO export always writes it: a fact, not a fault.
        dropped_ids.add(0)
        self._note('background_category', self.annotations_path, label,
                   f'category id 0 ({_describe(entry.get("name"))}) is '
                   'reserved for background', 'skipped category')
      elif not isinstance(entry.get('name'), str):
        dropped_ids.add(entry['id'])
        self._report('invalid_field', self.annotations_path, label,
                     f'category "name" is {_describe(entry.get("name"))}, '
                     'not a string', 'skipped category')
      elif entry['id'] in names:
        self._report('duplicate_category_id', self.annotations_path, label,
                     f'category id {entry["id"]} appears more than once',
                     'skipped later category')
      else:
        names[entry['id']] = entry['name']
    categories = [Category(category_id, names[category_id], index)
                  for index, category_id in enumerate(sorted(names), 1)]
    return categories, dropped_ids - set(names)

  # Images -------------------------------------------------------------------

  def _read_images(self, entries):
    """Returns (kept records by id, skipped id -> index of its problem)."""
    records, skipped = {}, {}
    for position, entry in enumerate(entries):
      try:
        record = self._image_record(entry)
      except _Skip as skip:
        self._report(skip.kind, self.annotations_path,
                     _entry_label('image', position, entry), skip.reason,
                     'skipped image')
        continue
      label = f'image {record.image_id}'
      if record.image_id in records or record.image_id in skipped:
        self._report('duplicate_image_id', record.path, label,
                     f'image id {record.image_id} appears more than once',
                     'skipped later image')
        continue
      try:
        self._check_inside_images(record)
        self._check_pixel_limit(record)
        self._verify_image_file(record)
      except _Skip as skip:
        skipped[record.image_id] = len(self.problems)
        self._report(skip.kind, record.path, label, skip.reason,
                     'skipped image')
        continue
      records[record.image_id] = record
    return records, skipped

  def _image_record(self, entry) -> ImageRecord:
    """Checks the entry's fields; the size must fit pycocotools' masks."""
    if not isinstance(entry, dict):
      raise _Skip('invalid_field',
                  f'image entry is {_describe(entry)}, not an object')
    image_id = entry.get('id')
    if not _is_int(image_id):
      raise _Skip('invalid_field',
                  f'image "id" is {_describe(image_id)}, not an integer')
    file_name = entry.get('file_name')
    if not isinstance(file_name, str) or not file_name:
      raise _Skip('invalid_field', f'"file_name" is {_describe(file_name)}, '
                  'not a non-empty string')
    for field in ('height', 'width'):
      value = entry.get(field)
      if not _is_int(value) or not 1 <= value <= MAX_IMAGE_SIDE:
        raise _Skip('invalid_field', f'"{field}" is {_describe(value)}, '
                    f'not an integer in 1..{MAX_IMAGE_SIDE}')
    height, width = entry['height'], entry['width']
    if height * width > MAX_MASK_PIXELS:
      raise _Skip('invalid_field', f'{height}x{width} pixels exceed the '
                  '2**32 - 1 that pycocotools masks can hold')
    path = os.path.join(self.images_dir, file_name)
    return ImageRecord(image_id, file_name, path, height, width, '', [])

  def _check_inside_images(self, record: ImageRecord):
    """Skips (or, when allowed, notes) a file outside the images folder."""
    outside = outside_folder(self.images_dir, record.path)
    if not outside:
      return
    if not self.allow_outside_images:
      raise _Skip('outside_images', outside)
    self._note('outside_images', record.path, f'image {record.image_id}',
               outside, 'read it (allow_outside_images)')

  def _check_pixel_limit(self, record: ImageRecord):
    """Skips an image Pillow would refuse to decode (pixel_limit)."""
    limit = pixel_limit()
    pixels = record.height * record.width
    if limit is not None and pixels > limit:
      raise _Skip('too_many_pixels', f'the json says {record.height}x'
                  f'{record.width} = {pixels} pixels, above the pixel limit '
                  f'of {limit} ({pixel_limit_source()})')

  def _verify_image_file(self, record: ImageRecord):
    """Opens (in 'full' mode decodes) the file; sets mode, notes conversion."""
    if self.verify_images == 'none':
      return
    if not os.path.isfile(record.path):
      raise _Skip('missing_image', 'image file does not exist')
    try:
      image = Image.open(record.path)
    except Image.DecompressionBombError as error:
      raise _Skip('too_many_pixels', f'the file\'s header is above the '
                  f'pixel limit ({pixel_limit_source()}): {error}') from None
    except Exception as error:  # Pillow raises many types on non-images.
      raise _Skip('unreadable_image',
                  f'file is not a readable image: {error}') from None
    with image:
      if (image.height, image.width) != (record.height, record.width):
        raise _Skip('image_size_mismatch',
                    f'file is {image.height}x{image.width} but the json says '
                    f'{record.height}x{record.width} (height x width)')
      if self.verify_images == 'full':
        _decode_fully(image)
      record.mode = image.mode
    if record.mode != 'RGB':
      bits = '16-bit ' if record.mode in _SIXTEEN_BIT_MODES else ''
      self._note('converted_image', record.path, f'image {record.image_id}',
                 f'mode {record.mode}, {bits}converted to 8-bit RGB',
                 f'converted {record.mode} to RGB')

  def _note_crowded_images(self, records):
    for record in records:
      if len(record.instances) > MANY_INSTANCES:
        self._note('many_instances', record.path, f'image {record.image_id}',
                   f'{len(record.instances)} instances; COCOeval\'s headline '
                   f'AP counts at most {MANY_INSTANCES} detections per image',
                   'kept all instances')

  # Annotations --------------------------------------------------------------

  def _read_annotations(self, entries, records, skipped_images, categories,
                        dropped_category_ids):
    """Parses annotations, fixes their ids, attaches them to their images."""
    dropped_with_image = {image_id: 0 for image_id in skipped_images}
    kept = []
    for position, entry in enumerate(entries):
      label = _entry_label('annotation', position, entry)
      try:
        image_id = _annotation_image_id(entry, records, skipped_images)
        if image_id in dropped_with_image:
          dropped_with_image[image_id] += 1
          continue
        instance, repairs = _parse_annotation(
            entry, records[image_id], categories, dropped_category_ids)
      except _Skip as skip:
        self._report(skip.kind, self.annotations_path, label, skip.reason,
                     'skipped annotation')
        continue
      for kind, reason, action in repairs:
        self._report(kind, self.annotations_path, label, reason, action)
      kept.append((label, instance, records[image_id]))
    self._assign_annotation_ids(kept, entries)
    for _, instance, record in kept:
      record.instances.append(instance)
    self._count_dropped_annotations(skipped_images, dropped_with_image)

  def _assign_annotation_ids(self, kept, entries):
    """Renumbers ids <= 0 and repeats: COCOeval never matches ids <= 0."""
    all_ids = [entry['id'] for entry in entries
               if isinstance(entry, dict) and _is_int(entry.get('id'))]
    next_id = max([0] + all_ids) + 1  # new ids collide with no id in the file
    used = set()
    for label, instance, _ in kept:
      original_id = instance.annotation_id
      if original_id >= 1 and original_id not in used:
        used.add(original_id)
        continue
      if original_id >= 1:
        kind = 'duplicate_annotation_id'
        reason = f'annotation id {original_id} appears more than once'
      else:
        kind = 'annotation_id_0'
        reason = (f'annotation id {original_id} is not positive; COCOeval '
                  'silently ignores such annotations when matching')
      instance.annotation_id = next_id
      used.add(next_id)
      self._report(kind, self.annotations_path, label, reason,
                   f'renumbered to {next_id}')
      next_id += 1

  def _count_dropped_annotations(self, skipped_images, dropped_with_image):
    """A skipped image's problem counts its annotations (no line for each)."""
    for image_id, problem_index in skipped_images.items():
      count = dropped_with_image[image_id]
      if count:
        noun = 'annotation' if count == 1 else 'annotations'
        self.problems[problem_index] = dataclasses.replace(
            self.problems[problem_index],
            action=f'skipped image and its {count} {noun}')


def pixel_limit() -> int | None:
  """Pixels above which Pillow refuses to open an image, None if unlimited.

  Pillow warns above PIL.Image.MAX_IMAGE_PIXELS and raises a
  DecompressionBombError above twice that; the reader skips what training
  could not load.
  """
  if Image.MAX_IMAGE_PIXELS is None:
    return None
  return 2 * int(Image.MAX_IMAGE_PIXELS)


def pixel_limit_source() -> str:
  """Where pixel_limit() comes from, for messages."""
  if Image.MAX_IMAGE_PIXELS is None:
    return 'PIL.Image.MAX_IMAGE_PIXELS is None: no limit'
  return (f'2 x PIL.Image.MAX_IMAGE_PIXELS = 2 x {Image.MAX_IMAGE_PIXELS}, '
          'where Pillow refuses images as decompression bombs')


def outside_folder(folder: str, path: str) -> str:
  """Why `path` leads outside `folder`, symbolic links followed; '' if not.

  A path that cannot be resolved (a NUL character) counts as outside.
  """
  try:
    real_folder = os.path.realpath(folder)
    real_path = os.path.realpath(path)
  except (OSError, ValueError) as error:
    return f'path cannot be resolved: {error}'
  if os.path.commonpath([real_folder, real_path]) == real_folder:
    return ''
  return (f'file resolves to {real_path}, outside the images folder '
          f'{real_folder}')


def _annotation_dict(record, instance):
  return {
      'id': instance.annotation_id,
      'image_id': record.image_id,
      'category_id': instance.category_id,
      'bbox': list(instance.box),
      'area': instance.area,
      'iscrowd': int(instance.is_crowd),
      'segmentation': {'size': list(instance.rle['size']),
                       'counts': instance.rle['counts'].decode('ascii')},
  }


def _annotation_image_id(entry, records, skipped_images) -> int:
  if not isinstance(entry, dict):
    raise _Skip('invalid_field',
                f'annotation entry is {_describe(entry)}, not an object')
  if not _is_int(entry.get('id')):
    raise _Skip('invalid_field', f'annotation "id" is '
                f'{_describe(entry.get("id"))}, not an integer')
  image_id = entry.get('image_id')
  if not _is_int(image_id):
    raise _Skip('invalid_field',
                f'"image_id" is {_describe(image_id)}, not an integer')
  if image_id not in records and image_id not in skipped_images:
    raise _Skip('unknown_image',
                f'image_id {image_id} is not in the images list')
  return image_id


def _parse_annotation(entry, record, categories, dropped_category_ids):
  """Returns (Instance with its original id, [(kind, reason, action)])."""
  category = _annotation_category(entry, categories, dropped_category_ids)
  is_crowd = _annotation_is_crowd(entry)
  bbox = _annotation_bbox(entry)
  repairs = []
  rle = _segmentation_to_rle(entry.get('segmentation'), record.height,
                             record.width, repairs)
  area = float(mask_utils.area(rle))
  if area == 0:
    raise _Skip('zero_area', 'mask has no pixels inside the image')
  if bbox is None:
    box = tuple(float(value) for value in mask_utils.toBbox(rle))
  else:
    box = _clip_box(bbox, record.height, record.width, repairs)
  instance = Instance(entry['id'], category.id, category.index, box, rle,
                      area, is_crowd)
  return instance, repairs


def _annotation_category(entry, categories, dropped_category_ids):
  category_id = entry.get('category_id')
  if not _is_int(category_id):
    raise _Skip('invalid_field',
                f'"category_id" is {_describe(category_id)}, not an integer')
  if category_id == 0:
    raise _Skip('background_category',
                'category_id 0 is reserved for background')
  if category_id in dropped_category_ids:
    raise _Skip('unknown_category',
                f'category {category_id} was skipped (see its problem)')
  if category_id not in categories:
    raise _Skip('unknown_category',
                f'category_id {category_id} is not in the categories list')
  return categories[category_id]


def _annotation_is_crowd(entry) -> bool:
  is_crowd = entry.get('iscrowd', 0)
  if isinstance(is_crowd, float) or is_crowd not in (0, 1):
    raise _Skip('invalid_field',
                f'"iscrowd" is {_describe(is_crowd)}, not 0 or 1')
  return bool(is_crowd)


def _annotation_bbox(entry):
  """Returns the bbox as 4 floats, or None (then it comes from the mask)."""
  if 'bbox' not in entry:
    return None
  bbox = entry['bbox']
  if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or
      not all(_is_finite_number(value) for value in bbox)):
    raise _Skip('invalid_field',
                f'"bbox" is {_describe(bbox)}, not 4 finite numbers')
  return [float(value) for value in bbox]


def _clip_box(bbox, height, width, repairs):
  """Clips an [x, y, w, h] box to the image; an empty box skips."""
  x, y, w, h = bbox
  if w <= 0 or h <= 0:
    raise _Skip('zero_area', f'bbox {_format_box(bbox)} has no area')
  left, top = max(x, 0.0), max(y, 0.0)
  right, bottom = min(x + w, float(width)), min(y + h, float(height))
  if right <= left or bottom <= top:
    raise _Skip('box_outside_image', f'bbox {_format_box(bbox)} lies '
                f'outside the {height}x{width} image')
  if (left, top, right, bottom) != (x, y, x + w, y + h):
    repairs.append(('box_outside_image', f'bbox {_format_box(bbox)} extends '
                    f'outside the {height}x{width} image', 'clipped to image'))
  return (left, top, right - left, bottom - top)


# Segmentations ----------------------------------------------------------------


def _segmentation_to_rle(segmentation, height, width, repairs) -> dict:
  """Polygons / uncompressed RLE / compressed RLE -> compressed RLE."""
  if isinstance(segmentation, list):
    return _polygons_to_rle(segmentation, height, width, repairs)
  if isinstance(segmentation, dict):
    return _rle_dict_to_rle(segmentation, height, width)
  raise _Skip('invalid_segmentation', f'"segmentation" is '
              f'{_describe(segmentation)}, not polygons or RLE')


def _polygons_to_rle(polygons, height, width, repairs) -> dict:
  """Drops unusable polygons (reported) and merges the rest into one mask."""
  if polygons and all(_is_number(value) for value in polygons):
    raise _Skip('invalid_segmentation', 'segmentation is a flat list of '
                'numbers; polygons must be nested: [[x1, y1, x2, y2, ...]]')
  usable, failures = [], []
  reach = POLYGON_REACH * max(height, width)
  for index, polygon in enumerate(polygons):
    if not isinstance(polygon, list) or not all(map(_is_number, polygon)):
      raise _Skip('invalid_segmentation', f'polygon {index} is '
                  f'{_describe(polygon)}, not a list of numbers')
    failure = _polygon_failure(polygon)
    if failure:
      failures.append(f'polygon {index} {failure}')
    elif any(abs(value) > reach for value in polygon):
      raise _Skip('invalid_segmentation', f'polygon {index} has coordinates '
                  f'far outside the {height}x{width} image')
    else:
      usable.append([float(value) for value in polygon])
  if not usable:
    raise _Skip('degenerate_polygon',
                '; '.join(failures) or 'segmentation has no polygons')
  if failures:
    repairs.append(('degenerate_polygon', '; '.join(failures),
                    f'dropped {len(failures)} of {len(polygons)} polygons'))
  # frPyObjects reads a first polygon of exactly 4 numbers as a box (and then
  # fails); polygons kept here have at least 6.
  return mask_utils.merge(mask_utils.frPyObjects(usable, height, width))


def _polygon_failure(polygon):
  """Says why this polygon cannot be a region, or returns None."""
  if not all(map(_is_finite_number, polygon)):
    return 'has non-finite coordinates'
  if len(polygon) % 2:
    return f'has an odd number ({len(polygon)}) of coordinates'
  if len(polygon) < 6:
    return f'has {len(polygon) // 2} points, needs at least 3'
  return None


def _rle_dict_to_rle(segmentation, height, width) -> dict:
  """Checks an RLE before pycocotools sees it: its C decoder trusts counts."""
  size, counts = segmentation.get('size'), segmentation.get('counts')
  if (not isinstance(size, (list, tuple)) or len(size) != 2 or
      not all(map(_is_int, size))):
    raise _Skip('invalid_segmentation',
                f'RLE "size" is {_describe(size)}, not [height, width]')
  size = list(size)
  if size != [height, width]:
    raise _Skip('invalid_segmentation', f'RLE size {size} differs from the '
                f'image size [{height}, {width}]')
  if isinstance(counts, list):
    _check_runs(counts, height, width, 'uncompressed RLE')
    # frPyObjects treats every dict as uncompressed RLE.
    rle = mask_utils.frPyObjects({'size': size, 'counts': counts}, height,
                                 width)
    return {'size': [height, width], 'counts': rle['counts']}
  if isinstance(counts, str):
    _check_runs(_compressed_runs(counts), height, width, 'compressed RLE')
    return {'size': [height, width], 'counts': counts.encode('ascii')}
  raise _Skip('invalid_segmentation',
              f'RLE "counts" is {_describe(counts)}, not a list or a string')


def _check_runs(runs, height, width, what):
  if not all(_is_int(run) and run >= 0 for run in runs):
    raise _Skip('invalid_segmentation',
                f'{what} counts must be non-negative integers')
  total = sum(runs)
  if total != height * width:
    raise _Skip('invalid_segmentation', f'{what} counts cover {total} '
                f'pixels, the {height}x{width} image has {height * width}')


def _compressed_runs(counts: str) -> list[int]:
  """Decodes COCO's RLE string: 5-bit groups, runs after the 3rd as deltas."""
  runs, position = [], 0
  while position < len(counts):
    value, shift = 0, 0
    while True:
      if position >= len(counts):
        raise _Skip('invalid_segmentation',
                    'compressed RLE string ends mid-number')
      code = ord(counts[position]) - 48
      if not 0 <= code < 64:
        raise _Skip('invalid_segmentation', 'compressed RLE has invalid '
                    f'character {counts[position]!r}')
      value |= (code & 0x1F) << shift
      position += 1
      shift += 5
      if not code & 0x20:  # last group; bit 0x10 is the sign
        if code & 0x10:
          value -= 1 << shift
        break
      if shift > 64:
        raise _Skip('invalid_segmentation',
                    'compressed RLE has an overlong number')
    if len(runs) > 2:
      value += runs[-2]
    runs.append(value)
  return runs


# Images -----------------------------------------------------------------------


def _decode_fully(image):
  """Decodes every pixel, refusing truncated data whatever Pillow's setting."""
  previous = ImageFile.LOAD_TRUNCATED_IMAGES
  ImageFile.LOAD_TRUNCATED_IMAGES = False
  try:
    image.load()
  except Exception as error:  # OSError, SyntaxError, ValueError, ...
    raise _Skip('corrupt_image',
                f'image data cannot be decoded: {error}') from None
  finally:
    ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _to_rgb_uint8(image) -> np.ndarray:
  """Any Pillow mode -> uint8 RGB; alpha is dropped, 16-bit keeps >> 8."""
  if image.mode in _SIXTEEN_BIT_MODES:
    values = np.asarray(image).astype(np.int64)
    gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
  if image.mode != 'RGB':
    with warnings.catch_warnings():
      # Palette images with transparency warn that alpha is lost: intended.
      warnings.simplefilter('ignore')
      image = image.convert('RGB')
  return np.array(image, dtype=np.uint8)


# Helpers ----------------------------------------------------------------------


def _load_json(annotations_path):
  try:
    with open(annotations_path, 'rb') as file:
      return json.loads(file.read().decode('utf-8'))
  except OSError as error:
    raise DatasetError(
        f'{annotations_path}: cannot read file: {error}') from None
  except UnicodeDecodeError as error:
    raise DatasetError(f'{annotations_path}: not UTF-8 text: {error}') from None
  except json.JSONDecodeError as error:
    raise DatasetError(f'{annotations_path}: invalid json: {error}') from None
  except RecursionError:
    raise DatasetError(
        f'{annotations_path}: json is nested too deeply') from None


def _top_level_sections(data, annotations_path):
  """Returns the images, annotations and categories lists."""
  if not isinstance(data, dict):
    raise DatasetError(f'{annotations_path}: json top level is '
                       f'{_describe(data)}, not an object')
  sections = []
  for key in ('images', 'annotations', 'categories'):
    if key not in data:
      raise DatasetError(f'{annotations_path}: json has no "{key}" list')
    if not isinstance(data[key], list):
      raise DatasetError(f'{annotations_path}: "{key}" is '
                         f'{_describe(data[key])}, not a list')
    sections.append(data[key])
  return sections


def _problems_message(annotations_path, problems):
  lines = [f'{annotations_path}: {len(problems)} problem(s) found '
           '(strict mode):']
  lines += [f'  {problem}' for problem in problems[:MAX_PROBLEMS_IN_MESSAGE]]
  if len(problems) > MAX_PROBLEMS_IN_MESSAGE:
    lines.append(f'  and {len(problems) - MAX_PROBLEMS_IN_MESSAGE} more')
  return '\n'.join(lines)


def _count_kinds(problems) -> dict[str, int]:
  counts = {}
  for problem in problems:
    counts[problem.kind] = counts.get(problem.kind, 0) + 1
  return counts


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
  if not _is_number(value):
    return False
  try:
    return math.isfinite(value)
  except OverflowError:  # an int too large for a float
    return False


def _entry_label(what, position, entry):
  """'annotation 7' when the entry has an integer id, else 'annotation #3'."""
  if isinstance(entry, dict) and _is_int(entry.get('id')):
    return f'{what} {entry["id"]}'
  return f'{what} #{position}'


def _format_box(bbox):
  return '[' + ', '.join(f'{value:g}' for value in bbox) + ']'


def _describe(value) -> str:
  """A bad json value for a message: its type and a clipped repr."""
  if value is None:
    return 'missing (or null)'
  return f'{type(value).__name__} {_SHORT_REPR.repr(value)}'
