"""An image gets the same results alone and beside larger images.

A batch pads every image to its largest member and the network sees that
padding; image_results.EachImageAlone runs each image at its own padded
size. Checked on the golden checkpoint (tests/testdata/golden/, weights that
give confident detections), through the encoded-image path of serving,
where images of any sizes share a batch.
"""

import numpy as np
import pytest
import tensorflow as tf

import golden


@pytest.fixture(scope='module')
def golden_model(tmp_path_factory):
  """(inference model, configs, [small png, larger png, tall png])."""
  models, configs = golden.restore(tmp_path_factory.mktemp('golden'))
  small, voc = golden.images()[::3]
  tall = np.ascontiguousarray(voc[:, :180])  # portrait: pads the other side
  encoded = [tf.io.encode_png(image).numpy() for image in (small, voc, tall)]
  return models.inference_model, configs, encoded


def _detect(golden_model, encoded, padding_multiple):
  from masklab_tf.postprocess import image_results
  from masklab_tf.serving import preprocess
  inference_model, configs, _ = golden_model
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


def test_an_image_gets_its_lone_results_beside_larger_images(golden_model):
  stride = golden_model[1].model.output_stride
  small, larger, tall = golden_model[2]
  alone = _detect(golden_model, [small], stride)
  for companion in (larger, tall):
    batched = _detect(golden_model, [small, companion], stride)
    count, box_shift, score_change, semantic = _first_image_differences(
        alone, batched)
    assert count > 0
    assert box_shift <= 0.5 and score_change <= 1e-3 and semantic == 0
    height, width = alone['detection_masks_full'].shape[2:]
    np.testing.assert_array_equal(
        alone['detection_masks_full'][0],
        batched['detection_masks_full'][0, :, :height, :width])


def test_the_whole_batch_at_once_would_depend_on_the_companions(
    golden_model):
  """What EachImageAlone prevents: run at once, the padding moves results
  (shows the test above can fail)."""
  small, larger, _ = golden_model[2]
  alone = _detect(golden_model, [small], 0)
  batched = _detect(golden_model, [small, larger], 0)
  _, box_shift, score_change, semantic = _first_image_differences(
      alone, batched)
  assert box_shift > 0.5 or score_change > 1e-3 or semantic > 0
