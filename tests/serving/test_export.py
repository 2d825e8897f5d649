"""The SavedModel: self-contained, dynamic batch and size, saved_model_cli,
and the README's load_model snippet."""

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from masklab_tf import config
from masklab_tf.modeling import factory
from masklab_tf.serving import model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Runs in a fresh interpreter where masklab_tf, Model Garden and tf_keras
# cannot be imported: the SavedModel must need TensorFlow only.
FRESH_PROCESS = r'''
import os, sys
# Beside this script, in the test's tmp_path, so that nothing outlives it.
stubs = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'stubs')
for name in ('masklab_tf', 'official', 'tf_keras'):
  os.makedirs(os.path.join(stubs, name))
  with open(os.path.join(stubs, name, '__init__.py'), 'w') as f:
    f.write('raise ImportError("%s must not be needed")\n' % name)
sys.path = [stubs] + [p for p in sys.path if p not in ('', REPO)]
import numpy as np
import tensorflow as tf
export_dir, images_path, encoded_path, out_path = sys.argv[1:]
loaded = tf.saved_model.load(export_dir)
outputs = loaded.signatures['serving_default'](
    images=tf.constant(np.load(images_path)))
with open(encoded_path, 'rb') as f:
  encoded = loaded.signatures['serving_encoded'](
      encoded=tf.constant([f.read()]))
np.savez(out_path, **{k: v.numpy() for k, v in outputs.items()},
         **{'encoded_' + k: v.numpy() for k, v in encoded.items()})
with open(loaded.categories.asset_path.numpy().decode()) as f:
  print(f.read())
'''.replace('REPO', repr(REPO))


@pytest.fixture(scope='module')
def reference(exported_model):
  """Two 120x150 images and the in-Python serving model's outputs."""
  images = np.random.default_rng(0).integers(
      0, 256, (2, 120, 150, 3)).astype(np.uint8)
  serving = model_lib.build_serving_model(exported_model['inference_model'],
                                          exported_model['configs'])
  outputs = {k: v.numpy() for k, v in serving(images).items()}
  return images, outputs


@pytest.fixture(scope='module')
def loaded(exported_model):
  """The SavedModel loaded once for the in-process tests (each load costs
  seconds); its signatures are stateless functions."""
  return tf.saved_model.load(exported_model['export_dir'])


def _assert_outputs_close(actual, expected, prefix=''):
  for key, value in expected.items():
    np.testing.assert_allclose(actual[prefix + key], value, atol=1e-4,
                               err_msg=prefix + key)


def test_saved_model_runs_with_tensorflow_only(exported_model, reference,
                                               tmp_path):
  images, expected = reference
  np.save(tmp_path / 'images.npy', images)
  buffer = io.BytesIO()
  Image.fromarray(images[0]).save(buffer, format='PNG')
  (tmp_path / 'image.png').write_bytes(buffer.getvalue())
  script = tmp_path / 'fresh.py'
  script.write_text(FRESH_PROCESS)
  result = subprocess.run(
      [sys.executable, str(script), exported_model['export_dir'],
       str(tmp_path / 'images.npy'), str(tmp_path / 'image.png'),
       str(tmp_path / 'out.npz')],
      capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert '"name": "triangle"' in result.stdout
  actual = np.load(tmp_path / 'out.npz')
  assert actual['detection_masks'].shape[-2:] == (41, 41)
  assert actual['semantic_map'].shape == (2, 120, 150)
  _assert_outputs_close(actual, expected)
  # The PNG bytes of image 0 alone through the encoded signature.
  single = {k: v[:1] for k, v in expected.items()}
  _assert_outputs_close(actual, single, prefix='encoded_')


def test_saved_model_cli_shows_and_runs_it(exported_model, reference,
                                           tmp_path):
  images, expected = reference
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  np.save(tmp_path / 'images.npy', images)
  # `show` runs while `run` does: each is mostly a TensorFlow import. Its
  # output goes to files (a full pipe would stall it).
  with open(tmp_path / 'show.txt', 'w') as out, open(
      tmp_path / 'show.err', 'w') as err:
    show = subprocess.Popen([cli, 'show', '--dir',
                             exported_model['export_dir'], '--all'],
                            stdout=out, stderr=err)
  ran = subprocess.run(
      [cli, 'run', '--dir', exported_model['export_dir'], '--tag_set',
       'serve', '--signature_def', 'serving_default', '--inputs',
       f'images={tmp_path / "images.npy"}', '--outdir',
       str(tmp_path / 'out')], capture_output=True, text=True, timeout=600)
  assert show.wait(timeout=300) == 0, (
      tmp_path / 'show.err').read_text()[-3000:]
  text = (tmp_path / 'show.txt').read_text()
  for signature in ('serving_default', 'serving_encoded'):
    assert f"signature_def['{signature}']" in text
  assert re.search(r"inputs\['images'\].*?dtype: DT_UINT8.*?"
                   r"shape: \(-1, -1, -1, 3\)", text, re.S)
  assert re.search(r"inputs\['encoded'\].*?dtype: DT_STRING.*?"
                   r"shape: \(-1\)", text, re.S)
  assert ran.returncode == 0, ran.stderr[-3000:]
  actual = {key: np.load(tmp_path / 'out' / f'{key}.npy')
            for key in expected}
  _assert_outputs_close(actual, expected)


def test_any_batch_and_image_size(exported_model, loaded):
  detections = exported_model['configs'].model.max_detections
  for shape in [(1, 64, 90, 3), (3, 150, 100, 3)]:
    outputs = loaded.signatures['serving_default'](
        images=tf.zeros(shape, tf.uint8))
    batch, height, width, _ = shape
    assert outputs['semantic_map'].shape == (batch, height, width)
    assert outputs['detection_boxes'].shape == (batch, detections, 4)
    boxes = outputs['detection_boxes'].numpy()
    assert (boxes[..., 2] <= height).all() and (boxes[..., 3] <= width).all()
  # Encoded images of different sizes in one request: each keeps its own
  # size; the semantic map is padded with -1 beyond the smaller one.
  encoded = []
  for height, width in [(60, 80), (90, 50)]:
    buffer = io.BytesIO()
    Image.new('RGB', (width, height), (90, 140, 30)).save(buffer, 'JPEG')
    encoded.append(buffer.getvalue())
  outputs = loaded.signatures['serving_encoded'](encoded=tf.constant(encoded))
  semantic = outputs['semantic_map'].numpy()
  assert semantic.shape == (2, 90, 80)
  assert (semantic[0, 60:] == -1).all() and (semantic[0, :60] >= 0).all()
  assert (semantic[1, :, 50:] == -1).all() and (semantic[1, :, :50] >= 0).all()


def _readme_snippet():
  with open(os.path.join(REPO, 'README.md')) as f:
    text = f.read()
  block = text.split('<!-- load_model snippet')[1].split('<!-- end snippet')[0]
  return block.split('```python\n')[1].split('```')[0]


def test_readme_load_model_snippet_runs(shapes_dir, tmp_path, monkeypatch,
                                        capsys):
  configs = config.from_flagfile('configs/shapes_cpu.flags', (
      '--backbone_depth=10', '--rpn_head_channels=16',
      '--hypercolumn_channels=8', '--refine_filters=8',
      '--max_detections=3', '--detection_score_threshold=0'))
  models = factory.build_models(configs.model, configs.geometry,
                                 configs.data.max_instances)
  model_dir = tmp_path / 'demo_data' / 'model'
  os.makedirs(model_dir)
  tf.train.Checkpoint(model=models.train_model).save(str(model_dir / 'ckpt'))
  config.to_json(configs, str(model_dir / config.CONFIGS_FILE))
  os.makedirs(tmp_path / 'demo_data' / 'val')
  os.symlink(os.path.join(shapes_dir, 'val', 'images'),
             tmp_path / 'demo_data' / 'val' / 'images')
  monkeypatch.chdir(tmp_path)
  exec(_readme_snippet(), {})  # pylint: disable=exec-used
  printed = capsys.readouterr().out.strip().splitlines()
  # Score threshold 0: the untrained model reports all 3 detections.
  assert len(printed) == 3, printed
  # load_model's outputs are the serving model's on the same weights.
  image = np.asarray(Image.open(
      os.path.join(shapes_dir, 'val', 'images', '000001.png')).convert('RGB'))
  loaded = model_lib.load_model(str(model_dir))
  direct = model_lib.build_serving_model(models.inference_model, configs)
  expected = direct(image[np.newaxis])
  for key, value in loaded(image[np.newaxis]).items():
    np.testing.assert_allclose(value, expected[key], atol=1e-5, err_msg=key)


def test_evaluating_the_saved_model_equals_the_checkpoint_path(
    exported_model, loaded, shapes_dir):
  """bin/evaluate --saved_model scores raw images through the signature;
  on same-size images that is exactly the eval pipeline's computation."""
  from masklab_tf.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  configs = exported_model['configs']
  evaluator = evaluator_lib.Evaluator(
      configs, os.path.join(shapes_dir, 'val', 'annotations.json'),
      os.path.join(shapes_dir, 'val', 'images'))
  direct = evaluator_lib.predict(exported_model['inference_model'],
                            evaluator.batches)
  served = evaluator_lib.predict_saved_model(
      loaded, evaluator.dataset)
  assert [p['image_id'] for p in direct] == [p['image_id'] for p in served]
  for a, b in zip(direct, served):
    np.testing.assert_allclose(a['boxes'], b['boxes'], atol=1e-3)
    np.testing.assert_allclose(a['scores'], b['scores'], atol=1e-5)
    # Masks may flip where a probability sits at 0.5 +- 1e-6.
    assert np.mean(a['masks'] != b['masks']) < 1e-3


def test_bad_requests_get_clear_errors_and_empty_ones_empty_outputs(
    loaded):
  images = loaded.signatures['serving_default']
  encoded = loaded.signatures['serving_encoded']
  for outputs in (images(images=tf.zeros([0, 50, 40, 3], tf.uint8)),
                  encoded(encoded=tf.zeros([0], tf.string))):
    assert outputs['num_detections'].shape == (0,)
    assert outputs['detection_boxes'].shape[0] == 0
    assert outputs['detection_masks'].shape[0] == 0
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'images must be uint8 \[batch, height, width, '
                     r'3\] \(RGB\), got shape \[1 8 8 4\]'):
    images(images=tf.zeros([1, 8, 8, 4], tf.uint8))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='must be uint8|expected to be a uint8'):
    images(images=tf.zeros([1, 8, 8, 3], tf.float32))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='element 0 of the batch is not a JPEG, PNG, '
                     'GIF, BMP or WebP image'):
    encoded(encoded=tf.constant([b'not an image']))
  # A 1x1 image is an image; and the model still serves after the errors.
  outputs = images(images=tf.zeros([1, 1, 1, 3], tf.uint8))
  assert outputs['semantic_map'].shape == (1, 1, 1)
