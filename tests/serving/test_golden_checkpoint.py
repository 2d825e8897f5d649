"""A checkpoint written before the architecture moved still restores, its
SavedModel gives the outputs it gave then (tests/testdata/golden/), and its
ONNX export gives the SavedModel's results (serving/onnx_export.py).

The golden files were written once by make_golden.py at the commit named in
golden.json. Restoring goes through what users call (configs.json, the
latest checkpoint of a model directory); the export has every optional
output (full-image masks, the output fusion's panoptic maps), so resizing,
the network, detection post-processing, pasting and fusion are all pinned.

The checkpoint is a shapes model after one training step: its scores are
spread over the classes, so per-class NMS has many overlapping candidates
of every class to decide between, which is what the ONNX export's portable
NMS must decide alike. The ONNX tests share this file's SavedModel (its
export is most of the file's time).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import golden
from in_process import tool_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture(scope='module')
def restored(tmp_path_factory):
  """The golden model directory (unpacked), its restored models and
  configs, and its SavedModel as recorded (full-image masks, panoptic)."""
  from masklab_tf.serving import export
  work = tmp_path_factory.mktemp('golden')
  models, configs = golden.restore(work)
  recorded = golden.record()
  export_dir = str(work / 'export')
  export.export_saved_model(models.inference_model, configs, export_dir,
                            categories=recorded['categories'],
                            **recorded['export'])
  return {'work': work, 'models': models, 'configs': configs,
          'saved_model': export_dir}


@pytest.fixture(scope='module')
def golden_export(restored):
  return tf.saved_model.load(restored['saved_model'])


def test_golden_checkpoint_gives_the_recorded_outputs(golden_export):
  expected = np.load(os.path.join(golden.GOLDEN, 'expected_outputs.npz'))
  serve = golden_export.signatures['serving_default']
  for i, image in enumerate(golden.images()):
    outputs = serve(images=tf.constant(image[np.newaxis]))
    keys = sorted(k for k in expected.files if k.startswith(f'{i}/'))
    assert sorted(f'{i}/{k}' for k in outputs) == keys
    for key, value in outputs.items():
      got, want = value.numpy()[0], expected[f'{i}/{key}']
      if want.dtype.kind == 'f':
        # Recorded on a Zen 4 EPYC (AVX-512 kernels); on a Zen 3 (AVX2)
        # rounding moved 2 of 8405 mask probabilities by 1.8e-4. The
        # integer outputs (classes, pasted masks, maps) stay exact.
        np.testing.assert_allclose(got, want, atol=5e-4, rtol=1e-3,
                                   err_msg=f'image {i} {key}')
      else:
        np.testing.assert_array_equal(got, want, err_msg=f'image {i} {key}')


def test_an_encoded_image_gets_its_lone_results_beside_larger_ones(
    golden_export):
  """serving_encoded runs each image at its own size: the shapes image
  beside the larger VOC image gets exactly its lone detections and maps."""
  serve = golden_export.signatures['serving_encoded']
  small, voc = [tf.io.encode_png(image).numpy()
                for image in golden.images()[::3]]
  alone = serve(encoded=tf.constant([small]))
  batched = serve(encoded=tf.constant([small, voc]))
  count = int(alone['num_detections'][0])
  assert count > 0 and int(batched['num_detections'][0]) == count
  for key, value in alone.items():
    got = batched[key].numpy()[0]
    want = value.numpy()[0]
    got = got[tuple(slice(0, n) for n in want.shape)]  # the batch's padding
    np.testing.assert_allclose(got, want, atol=1e-5, err_msg=key)


@pytest.fixture(scope='module')
def exports(restored):
  """`restored` and its bin/export --format=onnx model, with the panoptic
  maps as the SavedModel has them."""
  from masklab_tf.tools import export as export_tool
  work = restored['work']
  (work / 'categories.json').write_text(json.dumps(
      {'categories': golden.record()['categories']}))
  onnx_dir = work / 'onnx'
  with tool_flags(export_tool, '--format=onnx', '--panoptic',
                  f'--model_dir={work / "model"}', f'--export_dir={onnx_dir}',
                  f'--categories={work / "categories.json"}') as argv:
    export_tool.main(argv)
  return {**restored, 'onnx': str(onnx_dir / 'model.onnx')}


def _cases():
  """(name, uint8 [B, H, W, 3]): the golden images one by one, odd sizes,
  and a batch of three."""
  images = golden.images()
  shapes = images[0]
  cases = [(f'golden {i}', image[np.newaxis])
           for i, image in enumerate(images)]
  cases.append(('odd 97x131', shapes[:97, 5:136][np.newaxis]))
  cases.append(('odd 151x63', images[-1][40:191, 100:163][np.newaxis]))
  cases.append(('batch of 3', np.stack([image[:150, :150]
                                        for image in images[:3]])))
  return cases


def test_the_portable_graph_gives_the_fast_graphs_results(exports):
  """factory.build_models(portable=True): same weights, same outputs."""
  from masklab_tf.modeling import factory
  from masklab_tf.serving import model as model_lib
  configs = exports['configs']
  portable = factory.build_models(configs.model, configs.geometry,
                                  configs.data.max_instances, portable=True)
  portable.inference_model.set_weights(
      exports['models'].inference_model.get_weights())
  assert not any(getattr(layer, 'use_xla', False)
                 for layer in portable.inference_model.submodules)
  fast = model_lib.build_serving_model(exports['models'].inference_model,
                                       configs, full_image_masks=True)
  export_graph = model_lib.build_serving_model(
      portable.inference_model, configs, full_image_masks=True,
      portable=True)
  for name, images in _cases():
    want = {k: v.numpy() for k, v in fast(images, training=False).items()}
    got = {k: v.numpy() for k, v in export_graph(images,
                                                 training=False).items()}
    assert want['num_detections'].sum() > 0, name
    for key in ('num_detections', 'detection_classes'):
      np.testing.assert_array_equal(got[key], want[key], f'{name}: {key}')
    # Float outputs to rounding: the fast graph's XLA cluster and kernel
    # rewrites sum in another order (1e-4 px on boxes).
    for key in ('detection_boxes', 'detection_scores', 'detection_masks'):
      np.testing.assert_allclose(got[key], want[key], atol=1e-3,
                                 err_msg=f'{name}: {key}')
    for key in ('detection_masks_full', 'semantic_map'):
      assert np.mean(got[key] == want[key]) >= 0.9999, (name, key)


def _mask_ious(got, want):
  """IoU of each pair of binary masks [D, H, W] (1 where both are empty)."""
  got, want = got.astype(bool), want.astype(bool)
  union = (got | want).sum((1, 2))
  return np.where(union > 0, (got & want).sum((1, 2)) / np.maximum(union, 1),
                  1.0)


def test_onnx_runtime_gives_the_saved_models_results(exports):
  """Detections equal (boxes within 0.5 px, scores 1e-3, classes), masks
  IoU >= 0.99, the semantic map equal on >= 99.9 % of pixels, on every
  case of _cases (in fact all but exact), the panoptic maps too; the ONNX
  model has every output of the SavedModel's."""
  from masklab_tf.serving import onnx_model
  serve = tf.saved_model.load(exports['saved_model']).signatures[
      'serving_default']
  model = onnx_model.OnnxModel(exports['onnx'])
  assert model.categories == golden.record()['categories']
  for name, images in _cases():
    want = {k: v.numpy() for k, v in serve(images=tf.constant(images)).items()}
    got = model(images)
    assert sorted(got) == sorted(want), name
    np.testing.assert_array_equal(got['num_detections'],
                                  want['num_detections'], err_msg=name)
    for i, num in enumerate(want['num_detections']):
      assert num > 0, name
      at = f'{name}, image {i}'
      np.testing.assert_array_equal(got['detection_classes'][i],
                                    want['detection_classes'][i], at)
      np.testing.assert_allclose(got['detection_boxes'][i],
                                 want['detection_boxes'][i], atol=0.5,
                                 err_msg=at)
      np.testing.assert_allclose(got['detection_scores'][i],
                                 want['detection_scores'][i], atol=1e-3,
                                 err_msg=at)
      ious = _mask_ious(got['detection_masks_full'][i, :num],
                        want['detection_masks_full'][i, :num])
      assert ious.min() >= 0.99, (at, ious)
      for key in ('semantic_map', 'panoptic_category_map',
                  'panoptic_instance_map'):
        same = np.mean(got[key][i] == want[key][i])
        assert same >= 0.999, (at, key, same)


# Runs a bin/ launcher where `import tensorflow` (and what needs it) fails,
# then says which of those imports were tried.
NO_TENSORFLOW = """
import importlib.abc, runpy, sys
BLOCKED = ('tensorflow', 'tf_keras', 'keras', 'official', 'tf2onnx')
tried = []
class NoTensorFlow(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in BLOCKED:
      tried.append(name)
      raise ImportError(name + ': blocked by the test')
sys.meta_path.insert(0, NoTensorFlow())
sys.argv = sys.argv[1:]
try:
  runpy.run_path(sys.argv[0], run_name='__main__')
finally:
  print('tried to import:', sorted(set(tried)), file=sys.stderr)
"""


def _mask_ap(ground_truth, results):
  from masklab_tf.evaluation import evaluator
  return evaluator.coco_metrics(ground_truth, results)['mask']['AP']


def test_predict_onnx_without_tensorflow_writes_the_saved_models_results(
    exports, shapes_dir):
  """bin/predict --onnx in a process that cannot import TensorFlow, and
  --saved_model: the same COCO results (pycocotools mask AP within 0.1,
  and detection by detection)."""
  val = os.path.join(shapes_dir, 'val')
  annotations = os.path.join(val, 'annotations.json')
  common = [f'--images={val}/images', f'--image_ids_from={annotations}',
            '--batch_size=2']
  onnx_out = exports['work'] / 'predict_onnx'
  result = subprocess.run(
      [sys.executable, '-c', NO_TENSORFLOW,
       os.path.join(REPO, 'bin', 'predict'), f'--onnx={exports["onnx"]}',
       f'--output_dir={onnx_out}', *common],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'tried to import: []' in result.stderr, result.stderr[-3000:]

  from masklab_tf.tools import predict
  saved_out = exports['work'] / 'predict_saved_model'
  with tool_flags(predict, f'--saved_model={exports["saved_model"]}',
                  f'--output_dir={saved_out}', *common) as argv:
    assert predict.main(argv) == 0

  with open(onnx_out / 'results.json') as f:
    got = json.load(f)
  with open(saved_out / 'results.json') as f:
    want = json.load(f)
  with open(annotations) as f:
    ground_truth = json.load(f)
  assert len(got) == len(want) > 0
  assert abs(_mask_ap(ground_truth, got) - _mask_ap(ground_truth, want)) <= 0.1
  from pycocotools import mask as mask_api
  for g, w in zip(got, want):
    assert (g['image_id'], g['category_id']) == (w['image_id'],
                                                 w['category_id'])
    np.testing.assert_allclose(g['bbox'], w['bbox'], atol=0.5)
    assert abs(g['score'] - w['score']) <= 1e-3
    assert mask_api.iou([g['segmentation']], [w['segmentation']],
                        [0])[0, 0] >= 0.99
  assert any(name.endswith('_panoptic.png') for name in os.listdir(onnx_out))
  for name in os.listdir(saved_out):
    assert (onnx_out / name).exists(), name  # the same pictures


def test_what_onnx_cannot_express_is_named_to_the_last_subgraph():
  """A converter's leftovers (tf2onnx keeps unconverted TF ops and carries
  on) are found, also inside a loop's body."""
  import onnx
  from onnx import helper
  from masklab_tf.serving import onnx_export
  body = helper.make_graph(
      [helper.make_node('CombinedNonMaxSuppression', ['x'], ['y'],
                        name='nms')], 'body', [], [])
  graph = helper.make_graph(
      [helper.make_node('Relu', ['a'], ['b'], name='relu'),
       helper.make_node('Loop', ['n', 'c'], ['d'], name='loop', body=body)],
      'g', [], [])
  assert onnx_export.non_onnx_nodes(graph) == ['CombinedNonMaxSuppression '
                                               '(nms)']
  del onnx
