"""A tiny random-weight MaskLab SavedModel, exported once per test session."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# Smallest shapes model that still has every part: export traces both
# signatures (30-60 s on 2 cores), so tests share one export.
TINY = ('--backbone_depth=10', '--rpn_head_channels=16',
        '--hypercolumn_channels=8', '--refine_filters=8',
        '--max_detections=5')
CATEGORIES = [{'id': i, 'name': n} for i, n in
              [(1, 'circle'), (2, 'square'), (3, 'triangle'), (4, 'cross')]]


@pytest.fixture(scope='session')
def exported_model(tmp_path_factory):
  """{'export_dir', 'configs', 'inference_model'} of the shapes config
  (TINY overrides, random weights, the 4 shape names as categories, no
  full-image masks)."""
  from masklab_tf import config
  from masklab_tf.modeling import factory
  from masklab_tf.serving import export
  configs = config.from_flagfile(
      os.path.join(REPO, 'configs', 'shapes_cpu.flags'), TINY)
  models = factory.build_models(configs.model, configs.geometry,
                                 configs.data.max_instances)
  export_dir = str(tmp_path_factory.mktemp('saved_model') / '1')
  export.export_saved_model(models.inference_model, configs, export_dir,
                            categories=CATEGORIES, full_image_masks=False)
  return {'export_dir': export_dir, 'configs': configs,
          'inference_model': models.inference_model}
