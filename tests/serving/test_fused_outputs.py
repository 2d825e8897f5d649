"""Optional serving outputs: mask voting and the panoptic output fusion,
wired into the in-graph post-processing, equal their numpy references."""

import numpy as np
import tf_keras

from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.postprocess import output_fusion
from masklab_tf.serving import model as model_lib
import reference


def test_voted_masks_and_panoptic_maps_match_the_references():
  tf_keras.utils.set_random_seed(3)
  configs = config.from_flagfile('configs/shapes_cpu.flags', (
      '--backbone_depth=10', '--rpn_head_channels=16',
      '--hypercolumn_channels=8', '--refine_filters=8',
      '--max_detections=6', '--detection_score_threshold=0',
      '--detection_nms_iou=0.9'))
  models = factory.build_models(configs.model, configs.geometry,
                                 configs.data.max_instances)
  plain = model_lib.build_serving_model(models.inference_model, configs)
  fused = model_lib.build_serving_model(models.inference_model, configs,
                                        mask_voting=True, panoptic=True)
  images = np.random.default_rng(1).integers(
      0, 256, (2, 70, 90, 3)).astype(np.uint8)
  base = {k: v.numpy() for k, v in plain(images).items()}
  out = {k: v.numpy() for k, v in fused(images).items()}
  assert out['detection_masks_full'].shape == (2, 6, 70, 90)
  assert out['panoptic_category_map'].shape == (2, 70, 90)
  for i in range(2):
    num = int(base['num_detections'][i])
    assert num > 0
    boxes = base['detection_boxes'][i, :num]
    probabilities = reference.paste_masks_np(
        base['detection_masks'][i, :num], boxes, 70, 90)
    voted = reference.vote_masks_np(
        probabilities, boxes, base['detection_scores'][i, :num],
        base['detection_classes'][i, :num])
    # Pasting in TF and numpy differ by ~1e-6; compare away from 0.5.
    clear = np.abs(probabilities - 0.5) > 1e-4
    np.testing.assert_array_equal(
        out['detection_masks_full'][i, :num][clear], voted[clear])
    assert not out['detection_masks_full'][i, num:].any()
    category, instance, _ = output_fusion.fuse_np(
        base['semantic_map'][i], out['detection_masks_full'][i, :num],
        base['detection_classes'][i, :num],
        base['detection_scores'][i, :num])
    np.testing.assert_array_equal(out['panoptic_category_map'][i], category)
    np.testing.assert_array_equal(out['panoptic_instance_map'][i], instance)
  # The plain outputs are unchanged by the options.
  for key, value in base.items():
    np.testing.assert_allclose(out[key], value, atol=1e-5, err_msg=key)
