"""The input_pipeline suite's measurement: batches as training gets them."""

import os

from benchmarks.suites import input_pipeline
from masklab_tf.data import coco
from masklab_tf.data import sources
from masklab_tf.data import synthetic


def test_rate_times_padded_batches_of_the_shapes_set(tmp_path):
  synthetic.make_shapes(str(tmp_path), num_train=4, num_val=1)
  train = os.path.join(tmp_path, 'train')
  dataset = coco.read_coco(os.path.join(train, 'annotations.json'),
                           os.path.join(train, 'images'))
  rate, shape = input_pipeline.rate(input_pipeline.SMALL,
                                    sources.coco_source(dataset), 2, 2)
  assert rate > 0
  batch, height, width, channels = map(int, shape.split('x'))
  assert (batch, channels) == (2, 3)
  assert height % 8 == width % 8 == 0 and 128 <= max(height, width) <= 192
