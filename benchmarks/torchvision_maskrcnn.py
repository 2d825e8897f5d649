"""torchvision's Mask R-CNN R50-FPN, timed as side_by_side.py times the others.

Run by `benchmarks/side_by_side.py --systems=...,torchvision
--torchvision_python=PYTHON` with an interpreter that has torch, torchvision
and pycocotools (not this project's dependencies; e.g. a separate venv with
`pip install torch torchvision pycocotools`). One job per process, its
result written as json with the keys side_by_side.py's report reads:

  python benchmarks/torchvision_maskrcnn.py --job=infer --size=512 \
      --runs=3 --output=/tmp/tv.json
  python benchmarks/torchvision_maskrcnn.py --job=train --size=512 \
      --data_dir=WORK_DIR/data/512px_16images --output=/tmp/tv.json

The model is `maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`
with 81 classes (80 + background), its transform resizing to the image's
own size (square images: scale 1), at most 100 detections and score
threshold 0, so that, as in the TF rows, 100 untrained detections reach the
mask head. With no pretrained weights torchvision trains every layer with
ordinary batch norm; --fine_tune builds instead what its builder makes when
given ImageNet weights (not loaded: speed does not depend on the values):
FrozenBatchNorm2d everywhere and the stem and layer1 frozen (3 trainable
ResNet stages), the usual COCO recipe, whose backward pass is much cheaper.
Threads: torch's default (one per core). FLOPs:
`torch.utils.flop_counter.FlopCounterMode` (convolutions and matmuls,
multiply-add = 2 FLOPs; RoIAlign and NMS are not counted, as the TF
profiler counts neither CropAndResize nor NMS).
"""

import argparse
import json
import os
import random
import time

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
import torch
import torchvision
from torch.utils import flop_counter

try:
  from benchmarks import timing
except ImportError:  # run as a script: benchmarks/ is on the path
  import timing

NUM_CLASSES = 80
MAX_DETECTIONS = 100
TRAIN_BATCH = 2
INFER_BATCHES = (1, 4)


def _model(size, fine_tune):
  options = dict(num_classes=NUM_CLASSES + 1, min_size=size, max_size=size,
                 box_detections_per_img=MAX_DETECTIONS, box_score_thresh=0.0)
  if not fine_tune:
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, **options)
  # maskrcnn_resnet50_fpn's backbone when weights_backbone is given.
  backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
      backbone_name='resnet50', weights=None,
      norm_layer=torchvision.ops.misc.FrozenBatchNorm2d, trainable_layers=3)
  return torchvision.models.detection.MaskRCNN(backbone, **options)


def _info(size, fine_tune):
  return {'precision': 'float32', 'torch': torch.__version__,
          'torchvision': torchvision.__version__,
          'threads': torch.get_num_threads(), 'min_size': size,
          'box_score_thresh': 0.0,
          'box_detections_per_img': MAX_DETECTIONS,
          'trainable': ('layer2-4, FPN and heads; FrozenBatchNorm2d (the '
                        'fine-tuning recipe)' if fine_tune else
                        'all layers, nn.BatchNorm2d (no pretrained weights)')}


def _gflops(function):
  counter = flop_counter.FlopCounterMode(display=False)
  with counter:
    function()
  return counter.get_total_flops() / 1e9


def infer(size, runs, fine_tune):
  model = _model(size, fine_tune).eval()
  torch.manual_seed(0)
  result = {'load': [os.getloadavg()[0]]}
  with torch.inference_mode():
    for batch in INFER_BATCHES:
      images = [torch.rand(3, size, size) for _ in range(batch)]
      call = lambda images=images: model(images)
      first, median = timing.time_calls(call, (), runs)
      result[f'ms_per_image_b{batch}'] = 1e3 * median / batch
      result[f'first_call_s_b{batch}'] = first
      result[f'rss_mib_b{batch}'] = timing.peak_rss_mib()
      if batch == 1:
        result['detections_b1'] = len(call()[0]['boxes'])
        result['flops'] = {'gflops': _gflops(call), 'uncounted_top': [],
                           'unknown_shape_ops': 0}
    # The ResNet-50 body alone (no FPN), on a normalised image.
    body = model.backbone.body
    image = model.transform.normalize(torch.rand(3, size, size))[None]
    call = lambda: body(image)
    _, median = timing.time_calls(call, (), runs)
    result['backbone_ms_b1'] = 1e3 * median
    result['backbone_flops'] = {'gflops': _gflops(call)}
  result['load'].append(os.getloadavg()[0])
  result['info'] = _info(size, fine_tune)
  return result


def _read_examples(data_dir):
  """[(image [3, H, W] float in [0, 1], target dict)] of the train split."""
  with open(os.path.join(data_dir, 'train', 'annotations.json')) as f:
    coco = json.load(f)
  by_image = {}
  for annotation in coco['annotations']:
    by_image.setdefault(str(annotation['image_id']), []).append(annotation)
  examples = []
  for entry in coco['images']:
    path = os.path.join(data_dir, 'train', 'images', entry['file_name'])
    annotations = by_image.get(str(entry['id']), [])
    examples.append((path, annotations))
  return examples


def _load(example):
  path, annotations = example
  image = np.asarray(Image.open(path).convert('RGB'), np.float32) / 255.0
  boxes, labels, masks = [], [], []
  for annotation in annotations:
    x, y, w, h = json.loads(str(annotation['bbox']))
    rle = annotation['segmentation']
    if isinstance(rle, str):
      rle = json.loads(rle.replace("'", '"'))
    boxes.append([x, y, x + w, y + h])
    labels.append(int(annotation['category_id']))
    masks.append(mask_utils.decode(rle))
  target = {
      'boxes': torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
      'labels': torch.tensor(labels, dtype=torch.int64),
      'masks': torch.from_numpy(np.stack(masks)) if masks else
               torch.zeros(0, *image.shape[:2], dtype=torch.uint8),
  }
  return torch.from_numpy(image).permute(2, 0, 1).contiguous(), target


def train(size, runs, data_dir, data_batches, fine_tune):
  examples = _read_examples(data_dir)
  rng = random.Random(0)

  def batches():
    while True:
      picked = rng.sample(examples, TRAIN_BATCH)
      loaded = [_load(example) for example in picked]
      yield [image for image, _ in loaded], [target for _, target in loaded]

  torch.manual_seed(0)
  model = _model(size, fine_tune).train()
  # Fine-tuning from random weights: frozen batch norm with its identity
  # statistics normalises nothing, and one real SGD step sends the losses
  # to NaN, which empties the proposals and shrinks every later step. A
  # zero learning rate does the same work and keeps the values finite.
  optimizer = torch.optim.SGD(model.parameters(),
                              lr=0.0 if fine_tune else 0.01, momentum=0.9,
                              weight_decay=1e-4)

  def step(batch):
    images, targets = batch
    losses = model(images, targets)
    total = sum(losses.values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return float(total.detach())

  result = timing.measure_training(
      batches(), step, runs, data_batches,
      image_shape=lambda batch: [TRAIN_BATCH, size, size, 3],
      batch_size=TRAIN_BATCH)
  result['rss_mib'] = timing.peak_rss_mib()
  result['info'] = _info(size, fine_tune)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--job', choices=('infer', 'train'), required=True)
  parser.add_argument('--size', type=int, required=True)
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--data_dir', help='train: a side_by_side data root '
                      '(train/annotations.json, train/images).')
  parser.add_argument('--data_batches', type=int, default=20)
  parser.add_argument('--fine_tune', action='store_true',
                      help='FrozenBatchNorm2d, stem and layer1 frozen.')
  parser.add_argument('--output', required=True)
  args = parser.parse_args()
  start = time.perf_counter()
  if args.job == 'infer':
    result = infer(args.size, args.runs, args.fine_tune)
    result['rss_mib'] = timing.peak_rss_mib()
  else:
    if not args.data_dir:
      parser.error('--job=train needs --data_dir')
    result = train(args.size, args.runs, args.data_dir, args.data_batches,
                   args.fine_tune)
  result['job_s'] = time.perf_counter() - start
  with open(args.output, 'w') as f:
    json.dump(result, f)


if __name__ == '__main__':
  main()
