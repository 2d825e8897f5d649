"""Label images -> a COCO instances set (bin/labels_to_coco).

Usage:
  bin/labels_to_coco --images=IMAGE_OR_DIR --labels=LABELS_OR_DIR \
      --output_dir=DIR [--category=object] [--tile_size=N] [--tiles=0,1,2] \
      [--columns=START:END] [--cut_instances=clip|crowd|drop] [--min_area=1]

A label image holds one integer per pixel: 0 is background, every other
value one instance (the format of microscopy annotation tools, StarDist and
Cellpose). One file each, or two folders whose files pair by name (the
extension may differ). Writes DIR/images/*.png (8-bit: images of more bits
are scaled so that their 1st..99.8th percentile spans 0..255; the COCO
reader would keep only the high byte of a 16-bit image, black for most
microscopy) and
DIR/annotations.json (one category, RLE masks). --tile_size cuts each image
and its labels into N x N tiles (smaller at the right and bottom edges),
numbered row by row; --tiles keeps only those numbers, so that one image
can give a train set and a held-out val set; --columns keeps a range of
columns (0:256 and 256: cut an image into a left and a right half). An
instance cut by the edge of what is kept (a tile's or the columns') is
--cut_instances: `clip`, its part inside is an instance; `crowd`, its part
inside is an iscrowd region, which COCOeval ignores (a detection on it is
neither a hit nor a false positive) and training does not learn as
background; `drop`, it is not annotated (its pixels then teach
background). Prints per set the counts,
the most instances in one image (max_instances, max_detections) and the
box sides and aspect ratios (anchors) that docs/own-data.md uses.
"""

import os

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from masklab_tf import files

FLAGS = flags.FLAGS
CUT_POLICIES = ('clip', 'crowd', 'drop')


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  flags.DEFINE_string('images', None, 'An image file or a folder of them.')
  flags.DEFINE_string('labels', None, 'A label image or a folder of them, '
                      'named as the images.')
  flags.DEFINE_string('output_dir', None, 'Where images/ and '
                      'annotations.json go.')
  flags.DEFINE_string('category', 'object', 'Name of the one category.')
  flags.DEFINE_integer('tile_size', 0, 'Cut into tiles of this side (0: '
                       'whole images).')
  flags.DEFINE_list('tiles', [], 'Keep only these tile numbers (row by row '
                    'within each image; default: all).')
  flags.DEFINE_string('columns', '', 'Keep columns START:END of each image '
                      '(END may be left out: to the last column; default: '
                      'all).')
  flags.DEFINE_enum('cut_instances', 'clip', list(CUT_POLICIES),
                    'An instance cut by the edge of a tile or of --columns: '
                    'clip: its part inside is an instance; crowd: an '
                    'iscrowd region (ignored by COCOeval and training); '
                    'drop: not annotated.')
  flags.DEFINE_integer('min_area', 1, 'Drop instances (or their parts in a '
                       'tile) of fewer pixels.')
  flags.mark_flags_as_required(['images', 'labels', 'output_dir'])


def pairs(images: str, labels: str) -> list[tuple[str, str]]:
  """(image, label image) paths: two files, or two folders by file stem."""
  if os.path.isfile(images) and os.path.isfile(labels):
    return [(images, labels)]
  if not (os.path.isdir(images) and os.path.isdir(labels)):
    raise app.UsageError('--images and --labels: two files or two folders')
  by_stem = {os.path.splitext(name)[0]: os.path.join(labels, name)
             for name in os.listdir(labels)}
  found = []
  for name in sorted(os.listdir(images)):
    stem = os.path.splitext(name)[0]
    if stem not in by_stem:
      raise app.UsageError(f'{labels}: no label image for {name}')
    found.append((os.path.join(images, name), by_stem[stem]))
  return found


def to_uint8(pixels: np.ndarray) -> np.ndarray:
  """uint8 as it is; any other type scaled so that its 1st..99.8th
  percentile spans 0..255 (StarDist's normalisation: a few bright specks
  must not leave every other nucleus dark), clipped."""
  if pixels.dtype == np.uint8:
    return pixels
  low, high = np.percentile(pixels, (1, 99.8))
  scaled = (pixels.astype(np.float64) - low) * (255.0 / max(high - low, 1e-9))
  return np.round(np.clip(scaled, 0, 255)).astype(np.uint8)


def tile_windows(height: int, width: int, tile_size: int
                 ) -> list[tuple[int, int]]:
  """Top-left corners of the tiles, row by row (one window without tiles)."""
  if tile_size <= 0:
    return [(0, 0)]
  return [(y, x) for y in range(0, height, tile_size)
          for x in range(0, width, tile_size)]


def parse_columns(columns: str) -> tuple[int, int | None]:
  """'START:END' -> (START, END or None); '' -> (0, None)."""
  if not columns:
    return 0, None
  start, sep, end = columns.partition(':')
  try:
    if not sep:
      raise ValueError('no ":"')
    span = int(start or 0), (int(end) if end else None)
  except ValueError as e:
    raise app.UsageError(f'--columns={columns}: not START:END ({e})') from e
  if span[0] < 0 or (span[1] is not None and span[1] <= span[0]):
    raise app.UsageError(f'--columns={columns}: want 0 <= START < END')
  return span


def annotations_of(labels: np.ndarray, min_area: int = 1,
                   whole_areas: dict | None = None,
                   cut_instances: str = 'clip') -> list[dict]:
  """One COCO annotation (RLE, bbox, area; no ids) per label value > 0.

  Args:
    labels: the label image, or the part of it being converted.
    min_area: smaller instances (parts) are left out.
    whole_areas: label value -> its pixels in the whole label image; an
      instance with fewer here is cut, and `cut_instances` says what it
      becomes ('clip': an instance; 'crowd': an iscrowd region; 'drop':
      nothing).
  """
  found = []
  for value in np.unique(labels):
    if value == 0:
      continue
    mask = np.asfortranarray((labels == value).astype(np.uint8))
    area = int(mask.sum())
    cut = whole_areas is not None and area < whole_areas[value]
    crowd = cut and cut_instances == 'crowd'
    # A crowd region is kept however small: its pixels are not background.
    if (area < min_area and not crowd) or (cut and cut_instances == 'drop'):
      continue
    rle = mask_utils.encode(mask)
    rle['counts'] = rle['counts'].decode('ascii')
    found.append({'segmentation': rle, 'area': area,
                  'iscrowd': int(crowd),
                  'bbox': [float(v) for v in mask_utils.toBbox(rle)]})
  return found


def convert(image_label_pairs, output_dir: str, category: str = 'object',
            tile_size: int = 0, tiles=(), min_area: int = 1,
            columns: str = '', cut_instances: str = 'clip') -> dict:
  """Writes output_dir/images/*.png and output_dir/annotations.json;
  returns the COCO dict. Arguments: the flags of the same names."""
  keep = {int(number) for number in tiles}
  if keep and tile_size <= 0:
    raise app.UsageError('--tiles numbers the tiles of --tile_size')
  if cut_instances not in CUT_POLICIES:
    raise app.UsageError(f'--cut_instances={cut_instances}: one of '
                         f'{", ".join(CUT_POLICIES)}')
  first, last = parse_columns(columns)
  os.makedirs(os.path.join(output_dir, 'images'), exist_ok=True)
  data = {'images': [], 'annotations': [],
          'categories': [{'id': 1, 'name': category}]}
  for image_path, labels_path in image_label_pairs:
    pixels = to_uint8(np.asarray(Image.open(image_path)))
    labels = np.asarray(Image.open(labels_path))
    if labels.shape != pixels.shape[:2]:
      raise app.UsageError(f'{labels_path}: {labels.shape} labels for a '
                           f'{pixels.shape[:2]} image')
    if first >= labels.shape[1] or (last or 0) > labels.shape[1]:
      raise app.UsageError(f'--columns={columns}: {image_path} has '
                           f'{labels.shape[1]} columns')
    values, counts = np.unique(labels, return_counts=True)
    whole_areas = dict(zip(values, counts))
    pixels, labels = pixels[:, first:last], labels[:, first:last]
    stem = os.path.splitext(os.path.basename(image_path))[0]
    size = tile_size if tile_size > 0 else max(labels.shape)
    windows = tile_windows(*labels.shape, tile_size)
    for number, (y, x) in enumerate(windows):
      if keep and number not in keep:
        continue
      name = f'{stem}_{number}.png' if tile_size > 0 else f'{stem}.png'
      tile = pixels[y:y + size, x:x + size]
      with files.atomic_write(os.path.join(output_dir, 'images', name),
                              'wb') as f:
        Image.fromarray(tile).save(f, format='PNG')
      image_id = len(data['images']) + 1
      data['images'].append({'id': image_id, 'file_name': name,
                             'height': tile.shape[0], 'width': tile.shape[1]})
      for annotation in annotations_of(labels[y:y + size, x:x + size],
                                       min_area, whole_areas,
                                       cut_instances):
        annotation.update(id=len(data['annotations']) + 1, image_id=image_id,
                          category_id=1)
        data['annotations'].append(annotation)
  files.write_json(os.path.join(output_dir, 'annotations.json'), data)
  return data


def summary_lines(data: dict) -> list[str]:
  """Counts and the box statistics the config is chosen from (of the
  instances; crowd regions are counted apart)."""
  instances = [a for a in data['annotations'] if not a['iscrowd']]
  crowd = len(data['annotations']) - len(instances)
  per_image = np.bincount([a['image_id'] for a in instances],
                          minlength=len(data['images']) + 1)[1:]
  lines = [f'images={len(data["images"])} '
           f'instances={len(instances)} '
           f'most in one image={int(per_image.max(initial=0))}' +
           (f' crowd regions={crowd}' if crowd else '')]
  boxes = np.array([a['bbox'] for a in instances]).reshape(-1, 4)
  if len(boxes):
    sides = np.sqrt(boxes[:, 2] * boxes[:, 3])
    ratios = boxes[:, 2] / np.maximum(boxes[:, 3], 1e-9)
    percent = (0, 5, 50, 95, 100)
    lines.append('box side sqrt(w*h), px, at percentiles 0/5/50/95/100: ' +
                 ' '.join(f'{v:.0f}' for v in np.percentile(sides, percent)))
    lines.append('width/height at percentiles 0/5/50/95/100: ' +
                 ' '.join(f'{v:.2f}' for v in np.percentile(ratios, percent)))
  return lines


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  data = convert(pairs(FLAGS.images, FLAGS.labels), FLAGS.output_dir,
                 FLAGS.category, FLAGS.tile_size, FLAGS.tiles, FLAGS.min_area,
                 FLAGS.columns, FLAGS.cut_instances)
  for line in summary_lines(data):
    print(line)
  print(f'-> {os.path.join(FLAGS.output_dir, "annotations.json")}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
