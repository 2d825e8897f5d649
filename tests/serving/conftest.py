"""A tiny random-weight MaskLab SavedModel, exported once per test session."""

import fcntl
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
def exported_model(tmp_path_factory, worker_id):
  """{'export_dir', 'configs', 'inference_model'} of the shapes config
  (TINY overrides, random weights, the 4 shape names as categories, no
  full-image masks).

  Exported once per run: under pytest-xdist the first worker to need it
  exports it (with its weights beside it) into the run's shared folder and
  the others restore those weights, since an export is 30-60 s of tracing
  per worker."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from masklab_tf import config
  from masklab_tf.modeling import factory
  from masklab_tf.serving import export
  configs = config.from_flagfile(
      os.path.join(REPO, 'configs', 'shapes_cpu.flags'), TINY)
  models = factory.build_models(configs.model, configs.geometry,
                                 configs.data.max_instances)
  # Under xdist, the parent of a worker's base folder is the run's alone;
  # without it, the parent holds earlier runs' folders too.
  root = (tmp_path_factory.mktemp('exported') if worker_id == 'master' else
          tmp_path_factory.getbasetemp().parent / 'exported_model')
  root.mkdir(exist_ok=True)
  export_dir, weights = str(root / '1'), str(root / 'weights')
  checkpoint = tf.train.Checkpoint(model=models.inference_model)
  with open(root / 'lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # Released when the file closes.
    if (root / 'done').exists():
      checkpoint.read(weights).assert_existing_objects_matched()
    else:
      export.export_saved_model(models.inference_model, configs, export_dir,
                                categories=CATEGORIES,
                                full_image_masks=False)
      checkpoint.write(weights)
      (root / 'done').touch()
  return {'export_dir': export_dir, 'configs': configs,
          'inference_model': models.inference_model}
