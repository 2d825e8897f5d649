"""Every system of the registry exports to ONNX and gives its fast graph's
results there (random weights; slow: a conversion per system). The fast
suite covers MaskLab on the golden checkpoint
(tests/serving/test_golden_checkpoint.py)."""

import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TINY = ('--backbone_depth=10', '--rpn_head_channels=16',
        '--hypercolumn_channels=8', '--refine_filters=8',
        '--max_detections=5')


@pytest.mark.slow
@pytest.mark.parametrize('system', ['fcis', 'biseg', 'instancefcn',
                                    'masklab_deformable'])
def test_each_system_exports_to_onnx_with_its_results(system, tmp_path):
  from masklab_tf import config
  from masklab_tf.modeling import factory
  from masklab_tf.serving import model as model_lib
  from masklab_tf.serving import onnx_export
  from masklab_tf.serving import onnx_model
  flags = (('--mask_head=masklab', '--deformable_crop=true')
           if system == 'masklab_deformable' else (f'--mask_head={system}',))
  configs = config.from_flagfile(
      os.path.join(REPO, 'configs', 'shapes_cpu.flags'), TINY + flags)
  args = (configs.model, configs.geometry, configs.data.max_instances)
  fast = factory.build_models(*args)
  portable = factory.build_models(*args, portable=True)
  portable.inference_model.set_weights(fast.inference_model.get_weights())
  path = onnx_export.export_onnx(portable.inference_model, configs,
                                 str(tmp_path))
  images = np.random.default_rng(0).integers(0, 256, (2, 150, 170, 3),
                                             dtype=np.uint8)
  want = {k: v.numpy() for k, v in model_lib.build_serving_model(
      fast.inference_model, configs, full_image_masks=True)(
          images, training=False).items()}
  got = onnx_model.OnnxModel(path)(images)
  for key in ('num_detections', 'detection_classes'):
    np.testing.assert_array_equal(got[key], want[key], key)
  np.testing.assert_allclose(got['detection_boxes'], want['detection_boxes'],
                             atol=0.5)
  np.testing.assert_allclose(got['detection_scores'],
                             want['detection_scores'], atol=1e-3)
  assert np.mean(got['detection_masks_full'] ==
                 want['detection_masks_full']) >= 0.999
