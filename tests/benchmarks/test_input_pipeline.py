"""The input_pipeline suite's 800 px set: masks and boxes scaled with it."""

import json

import pytest

from benchmarks.suites import input_pipeline
from masklab_tf.data import synthetic


def test_upscaled_split_scales_images_masks_and_boxes(tmp_path):
  synthetic.make_shapes(str(tmp_path / 'shapes'), num_train=2, num_val=1)
  source = tmp_path / 'shapes' / 'train'
  input_pipeline.upscale_split(str(source), str(tmp_path / 'big'), 480)
  small = json.loads((source / 'annotations.json').read_text())
  big = json.loads((tmp_path / 'big' / 'annotations.json').read_text())
  scale = {}
  for before, after in zip(small['images'], big['images']):
    assert min(after['height'], after['width']) == 480
    scale[after['id']] = after['height'] / before['height']
  for before, after in zip(small['annotations'], big['annotations']):
    factor = scale[after['image_id']]
    assert after['area'] == pytest.approx(before['area'] * factor**2,
                                          rel=0.2)
    for old, new in zip(before['bbox'], after['bbox']):
      assert new == pytest.approx(old * factor, abs=factor + 1)
