"""A checkpoint written before the architecture moved still restores, and its
SavedModel gives the outputs it gave then (tests/testdata/golden/).

The golden files were written once by make_golden.py at the commit named in
golden.json. Restoring goes through what users call (configs.json, the
latest checkpoint of a model directory); the export has every optional
output (full-image masks, the output fusion's panoptic maps), so resizing,
the network, detection post-processing, pasting and fusion are all pinned.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

import golden


@pytest.fixture(scope='module')
def golden_export(tmp_path_factory):
  from masklab_tf.serving import export
  work = tmp_path_factory.mktemp('golden')
  models, configs = golden.restore(work)
  recorded = golden.record()
  export_dir = str(work / 'export')
  export.export_saved_model(models.inference_model, configs, export_dir,
                            categories=recorded['categories'],
                            **recorded['export'])
  return tf.saved_model.load(export_dir)


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
