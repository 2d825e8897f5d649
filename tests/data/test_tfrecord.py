"""TFRecords: written once, read back identical to the json path."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf import config
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.data import tfrecord

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
GEOMETRY = config.GeometryConfig()
# A shard written by the hand-written encoder before the move onto Model
# Garden's builder and decoder, and what that encoder's reader decoded.
OLD_RECORDS = os.path.join(REPO, 'tests', 'testdata', 'tfrecord')
OLD_PREFIX = os.path.join(OLD_RECORDS, 'old')


@pytest.fixture(scope='module')
def shapes_records(shapes_train, tmp_path_factory):
  dataset = coco.read_coco(*shapes_train, verify_images='full')
  prefix = str(tmp_path_factory.mktemp('records') / 'train')
  tfrecord.write_tfrecords(dataset, prefix, num_shards=3)
  return dataset, prefix


def eval_batches(cfg, source):
  dataset = pipeline.build_dataset(cfg, GEOMETRY, 2, is_training=False,
                                   source=source, output_stride=8, seed=0)
  return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset]


def test_shards_and_categories_written(shapes_records):
  dataset, prefix = shapes_records
  paths = tfrecord.shard_paths(prefix, 3)
  assert all(os.path.exists(p) for p in paths)
  assert not any(os.path.exists(p + '.tmp') for p in paths)
  categories = tfrecord.read_categories(
      tfrecord.categories_path_for(prefix + '-*'))
  assert [c['id'] for c in categories] == [c.id for c in dataset.categories]
  count = sum(1 for p in paths for _ in tf.data.TFRecordDataset(p))
  assert count == len(dataset.records)
  # Masks are 0/1 PNGs, as Model Garden's converter writes them (its
  # decoder does not binarise by default).
  example = tf.train.Example.FromString(
      next(iter(tf.data.TFRecordDataset(paths[0]))).numpy())
  masks = example.features.feature['image/object/mask'].bytes_list.value
  assert masks and all(
      set(np.unique(tf.io.decode_png(m).numpy())) == {0, 1} for m in masks)


def test_tfrecord_pipeline_equals_json_pipeline(shapes_records):
  dataset, prefix = shapes_records
  cfg = config.DataConfig(eval_min_size=160, max_size=200, max_instances=16,
                          keep_full_masks=True)
  from_json = eval_batches(cfg, sources.coco_source(dataset))
  categories = tfrecord.read_categories(
      tfrecord.categories_path_for(prefix + '-*'))
  from_records = eval_batches(
      cfg, tfrecord.tfrecord_source(prefix + '-*', categories))
  # Shards interleave, so compare image by image.
  by_id = {}
  for batch in from_records:
    for i, image_id in enumerate(batch['image_id']):
      by_id[int(image_id)] = {k: v[i] for k, v in batch.items()}
  assert len(by_id) == len(dataset.records)
  for batch in from_json:
    for i, image_id in enumerate(batch['image_id']):
      other = by_id[int(image_id)]
      for key, value in batch.items():
        np.testing.assert_allclose(value[i], other[key], atol=1e-4,
                                   err_msg=key)


def test_make_source_reads_a_data_split(shapes_records, shapes_train):
  """A DataSplitConfig names TFRecords (categories beside them by default)
  or a COCO json and its images; both give the same examples."""
  dataset, prefix = shapes_records
  annotations, images = shapes_train
  records = pipeline.make_source(
      config.DataSplitConfig(tfrecords=prefix + '-*'), 'none')
  json_source = pipeline.make_source(
      config.DataSplitConfig(annotations=annotations, images=images), 'none')
  ids = lambda source: sorted(int(source.decode(k)['image_id'])
                              for k in source.keys)
  assert ids(records) == ids(json_source) == sorted(
      r.image_id for r in dataset.records)
  with pytest.raises(ValueError, match='no data'):
    pipeline.make_source(config.DataSplitConfig(), 'none')


def test_sharding_by_file_per_worker(shapes_records):
  _, prefix = shapes_records
  categories = tfrecord.read_categories(
      tfrecord.categories_path_for(prefix + '-*'))
  seen = []
  for worker in range(3):
    context = tf.distribute.InputContext(3, worker, 3)
    source = tfrecord.tfrecord_source(prefix + '-*', categories, context)
    seen.append({int(source.decode(k)['image_id']) for k in source.keys})
  assert sum(len(s) for s in seen) == len(set().union(*seen))


def test_make_tfrecords_tool(shapes_train, tmp_path):
  annotations, images = shapes_train
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'bin', 'make_tfrecords'),
       f'--annotations={annotations}', f'--images={images}',
       f'--output_prefix={tmp_path}/out/train', '--num_shards=2'],
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert 'problems=0' in result.stdout
  assert os.path.exists(f'{tmp_path}/out/train-00001-of-00002.tfrecord')
  assert os.path.exists(f'{tmp_path}/out/train.categories.json')


def test_non_rgb_images_are_stored_converted(tmp_path, voc_sample):
  annotations, images = voc_sample
  # Turn the sample into a grayscale PNG: the reader converts it, the
  # shards store the converted RGB so the graph never has to.
  from PIL import Image
  data = json.load(open(annotations))
  name = data['images'][0]['file_name']
  gray_dir = tmp_path / 'gray'
  gray_dir.mkdir()
  Image.open(os.path.join(images, name)).convert('L').save(gray_dir / name)
  dataset = coco.read_coco(annotations, str(gray_dir), verify_images='full')
  assert dataset.records[0].mode == 'L'
  prefix = str(tmp_path / 'rec' / 'gray')
  tfrecord.write_tfrecords(dataset, prefix, num_shards=1)
  source = tfrecord.tfrecord_source(
      prefix + '-*', tfrecord.read_categories(prefix + '.categories.json'))
  (key,) = list(source.keys)
  decoded = source.decode(key)
  np.testing.assert_array_equal(decoded['image'].numpy(),
                                dataset.load_image(dataset.records[0]))
  assert decoded['masks'].shape[0] == 19


def test_missing_files_and_categories_are_clear_errors(tmp_path):
  with pytest.raises(ValueError, match='no TFRecord files match'):
    tfrecord.tfrecord_source(str(tmp_path / 'nothing-*'), [])
  with pytest.raises(ValueError, match='cannot read the categories'):
    tfrecord.read_categories(str(tmp_path / 'missing.json'))


def _old_expected():
  expected = {}
  with np.load(os.path.join(OLD_RECORDS, 'expected.npz')) as data:
    for key in data.files:
      image_id, field = key.split('/')
      expected.setdefault(int(image_id), {})[field] = data[key]
  return expected


def _make_records_module():
  spec = importlib.util.spec_from_file_location(
      'make_records', os.path.join(OLD_RECORDS, 'make_records.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('in_graph', [False, True])
def test_records_written_by_the_old_encoder_still_read(in_graph):
  expected = _old_expected()
  source = tfrecord.tfrecord_source(
      OLD_PREFIX + '-*',
      tfrecord.read_categories(OLD_PREFIX + tfrecord.CATEGORIES_SUFFIX))
  decode = tf.function(source.decode) if in_graph else source.decode
  seen = set()
  for key in source.keys:
    decoded = {k: v.numpy() for k, v in decode(key).items()}
    want = expected[int(decoded['image_id'])]
    seen.add(int(decoded['image_id']))
    assert set(decoded) == set(want) - {'old_reader_failed'}
    for field, value in decoded.items():
      assert value.dtype == want[field].dtype, field
      assert value.shape == want[field].shape, field
      np.testing.assert_array_equal(value, want[field], err_msg=field)
  assert seen == {11, 12, 13}
  # The crowd instance (raw ids 3 and 7 map to classes 1 and 2) and the
  # image the old reader could not decode are among them.
  np.testing.assert_array_equal(expected[11]['is_crowd'], [0, 0, 1])
  np.testing.assert_array_equal(expected[11]['classes'], [1, 2, 1])
  assert expected[13]['old_reader_failed']


def test_old_records_with_an_empty_image_run_through_the_pipeline():
  cfg = config.DataConfig(eval_min_size=32, max_size=64, max_instances=4)
  batches = eval_batches(cfg, pipeline.make_source(
      config.DataSplitConfig(tfrecords=OLD_PREFIX + '-*'), 'none'))
  counts = {int(i): int(n) for b in batches
            for i, n in zip(b['image_id'], b['num_instances'])}
  assert counts == {11: 2, 12: 1, 13: 0}  # crowds only mark ignore regions


def test_encoder_writes_the_old_layout_plus_model_gardens_image_keys(
    tmp_path):
  """The builder-based encoder writes what the hand-written one wrote, and
  the two image keys TfExampleBuilder always adds."""
  dataset = _make_records_module().make_dataset(str(tmp_path))
  old = [tf.train.Example.FromString(r.numpy()) for r in
         tf.data.TFRecordDataset(tfrecord.shard_paths(OLD_PREFIX, 1))]
  assert len(old) == len(dataset.records)
  for record, old_example in zip(dataset.records, old):
    new = tf.train.Example.FromString(tfrecord.encode_record(dataset, record))
    new_features = dict(new.features.feature)
    old_features = dict(old_example.features.feature)
    assert set(new_features) - set(old_features) == {'image/format',
                                                     'image/channels'}
    assert new_features['image/channels'].int64_list.value == [3]
    assert new_features['image/format'].bytes_list.value[0] in (b'PNG',
                                                                b'JPEG')
    for key, feature in old_features.items():
      if key in ('image/encoded', 'image/object/mask'):
        # Compared decoded, so that another Pillow's PNG bytes would pass.
        for new_bytes, old_bytes in zip(
            new_features[key].bytes_list.value, feature.bytes_list.value,
            strict=True):
          np.testing.assert_array_equal(tf.io.decode_image(new_bytes),
                                        tf.io.decode_image(old_bytes))
      else:
        assert new_features[key] == feature, key
