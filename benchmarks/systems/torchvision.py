"""torchvision's Mask R-CNN R50-FPN, timed as the speed suite times the rest.

Runs under another interpreter (--torchvision_python: one with torch,
torchvision and pycocotools, none a dependency of this project), one job
per process, as the harness's runner calls it:

  PYTHON -m benchmarks.systems.torchvision --job=infer --size=512 --runs=3 \
      [--fine_tune] --job_output=OUT.json
  PYTHON -m benchmarks.systems.torchvision --job=train --size=512 \
      --data_dir=WORK_DIR/data/512px_16images --job_output=OUT.json

`maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`, 81 classes, its
transform resizing to the image's own size (square images: scale 1), 100
detections at score threshold 0 (100 untrained detections reach the mask
head, as in the TF rows); every layer trained with ordinary batch norm.
--fine_tune builds what its builder makes when given ImageNet weights (not
loaded: speed does not depend on values): FrozenBatchNorm2d, stem and layer1
frozen, the usual COCO recipe. FLOPs: torch.utils.flop_counter
(convolutions and matmuls; neither RoIAlign nor NMS, as the TF profiler).
"""

import argparse
import json
import os
import random

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
import torch
import torchvision
from torch.utils import flop_counter

from benchmarks.harness import timing

TRAIN_BATCH = 2


def _model(size, fine_tune):
  options = dict(num_classes=81, min_size=size, max_size=size,
                 box_detections_per_img=100, box_score_thresh=0.0)
  if not fine_tune:
    return torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, **options)
  backbone = torchvision.models.detection.backbone_utils.resnet_fpn_backbone(
      backbone_name='resnet50', weights=None,
      norm_layer=torchvision.ops.misc.FrozenBatchNorm2d, trainable_layers=3)
  return torchvision.models.detection.MaskRCNN(backbone, **options)


def _info(size, fine_tune):
  return {'precision': 'float32', 'torch': torch.__version__,
          'torchvision': torchvision.__version__,
          'threads': torch.get_num_threads(), 'min_size': size,
          'box_score_thresh': 0.0, 'box_detections_per_img': 100,
          'trainable': ('layer2-4, FPN and heads; FrozenBatchNorm2d (the '
                        'fine-tuning recipe)' if fine_tune else
                        'all layers, nn.BatchNorm2d (no pretrained weights)')}


def _gflops(function):
  counter = flop_counter.FlopCounterMode(display=False)
  with counter:
    function()
  return counter.get_total_flops() / 1e9


def infer(size, runs, fine_tune):
  """The speed suite's inference job: batches 1 and 4, then the ResNet-50
  body alone (no FPN) on a normalised image."""
  model = _model(size, fine_tune).eval()
  torch.manual_seed(0)
  result = {'load': [os.getloadavg()[0]]}
  with torch.inference_mode():
    for batch in (1, 4):
      call = lambda images=[torch.rand(3, size, size)
                            for _ in range(batch)]: model(images)
      first, median = timing.time_calls(call, (), runs)
      result[f'ms_per_image_b{batch}'] = 1e3 * median / batch
      result[f'first_call_s_b{batch}'] = first
      result[f'rss_mib_b{batch}'] = timing.peak_rss_mib()
      if batch == 1:
        result['detections_b1'] = len(call()[0]['boxes'])
        result['flops'] = {'gflops': _gflops(call), 'uncounted_top': [],
                           'unknown_shape_ops': 0}
    image = model.transform.normalize(torch.rand(3, size, size))[None]
    call = lambda: model.backbone.body(image)
    result['backbone_ms_b1'] = 1e3 * timing.time_calls(call, (), runs)[1]
    result['backbone_flops'] = {'gflops': _gflops(call)}
  result['load'].append(os.getloadavg()[0])
  return result


def _examples(data_dir):
  """[(image path, its annotations)] of the train split."""
  with open(os.path.join(data_dir, 'train', 'annotations.json')) as f:
    coco = json.load(f)
  by_image = {}
  for annotation in coco['annotations']:
    by_image.setdefault(str(annotation['image_id']), []).append(annotation)
  return [(os.path.join(data_dir, 'train', 'images', entry['file_name']),
           by_image.get(str(entry['id']), [])) for entry in coco['images']]


def _load(example):
  """(image [3, H, W] in [0, 1], target), decoded in Python."""
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
               torch.zeros(0, *image.shape[:2], dtype=torch.uint8)}
  return torch.from_numpy(image).permute(2, 0, 1).contiguous(), target


def train(size, runs, data_dir, data_batches, fine_tune):
  """The speed suite's training job, SGD (momentum 0.9) on the suite's
  PNGs and annotations."""
  examples, rng = _examples(data_dir), random.Random(0)

  def batches():
    while True:
      loaded = [_load(example) for example in rng.sample(examples,
                                                         TRAIN_BATCH)]
      yield [image for image, _ in loaded], [target for _, target in loaded]

  torch.manual_seed(0)
  model = _model(size, fine_tune).train()
  # Frozen batch norm with its identity statistics normalises nothing on
  # random weights: one real step sends the losses to NaN and empties the
  # proposals. A zero rate does the same work with finite values.
  optimizer = torch.optim.SGD(model.parameters(),
                              lr=0.0 if fine_tune else 0.01, momentum=0.9,
                              weight_decay=1e-4)

  def step(batch):
    total = sum(model(*batch).values())
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    return float(total.detach())

  return timing.measure_training(
      batches(), step, runs, data_batches,
      image_shape=lambda batch: [TRAIN_BATCH, size, size, 3],
      batch_size=TRAIN_BATCH)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--job', choices=('infer', 'train'), required=True)
  parser.add_argument('--size', type=int, required=True)
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--data_dir', help='train: the suite\'s data root.')
  parser.add_argument('--data_batches', type=int, default=20)
  parser.add_argument('--fine_tune', action='store_true')
  parser.add_argument('--job_output', required=True)
  args = parser.parse_args()
  if args.job == 'infer':
    result = infer(args.size, args.runs, args.fine_tune)
  elif args.data_dir:
    result = train(args.size, args.runs, args.data_dir, args.data_batches,
                   args.fine_tune)
  else:
    parser.error('--job=train needs --data_dir')
  result.update(info=_info(args.size, args.fine_tune),
                rss_mib=timing.peak_rss_mib())
  with open(args.job_output + '.tmp', 'w') as f:
    json.dump(result, f)
  os.replace(args.job_output + '.tmp', args.job_output)


if __name__ == '__main__':
  main()
