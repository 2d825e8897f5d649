"""The semantic-segmentation pretraining stage (paper Table 6 "Seg") and
--init_checkpoint from bin/train runs: the stage's loss against numpy, its
mean-IoU evaluation, and MaskLab starting from its weights."""

import contextlib
import io
import json
import os

from absl import app
import numpy as np
import pytest
import tensorflow as tf

from in_process import tool_flags
from masklab_tf import config
from masklab_tf.modeling import checkpoints
from masklab_tf.modeling import factory
from masklab_tf.tools import export as export_tool
from masklab_tf.tools import train as train_tool
from masklab_tf.training import trainer as trainer_lib

STEPS = 6


def _bin_train(*args):
  """bin/train's main in this process; returns what it printed."""
  out = io.StringIO()
  with tool_flags(train_tool, '--flagfile=configs/shapes_cpu.flags',
                  *args) as argv, contextlib.redirect_stdout(out):
    train_tool.main(argv)
  return out.getvalue()


@pytest.fixture(scope='module')
def pretrained(shapes_dir, tmp_path_factory, tiny_training_flags):
  """bin/train --mask_head=semantic_segmentation, STEPS steps with a val
  set evaluated every 4 steps: (model_dir, the printed lines)."""
  model_dir = tmp_path_factory.mktemp('pretrained') / 'seg'
  printed = _bin_train(
      f'--model_dir={model_dir}', *tiny_training_flags,
      '--mask_head=semantic_segmentation', f'--train_steps={STEPS}',
      '--checkpoint_every=100', '--learning_rate=0.05', '--eval_every=4',
      f'--train_annotations={shapes_dir}/train/annotations.json',
      f'--train_images={shapes_dir}/train/images',
      f'--val_annotations={shapes_dir}/val/annotations.json',
      f'--val_images={shapes_dir}/val/images')
  return model_dir, printed.splitlines()


@pytest.fixture(scope='module')
def initialised(pretrained, shapes_dir, tmp_path_factory,
                tiny_training_flags):
  """bin/train of MaskLab from the stage, 0 steps: (its model_dir, what it
  printed); its checkpoint holds the weights it started from."""
  seg_dir, _ = pretrained
  model_dir = tmp_path_factory.mktemp('initialised') / 'masklab'
  printed = _bin_train(
      f'--model_dir={model_dir}', *tiny_training_flags,
      f'--init_checkpoint={seg_dir}', '--train_steps=0',
      f'--train_annotations={shapes_dir}/train/annotations.json',
      f'--train_images={shapes_dir}/train/images')
  return model_dir, printed


def _restored(model_dir):
  configs = config.from_json(os.path.join(model_dir, config.CONFIGS_FILE))
  return configs, factory.restore_models(
      configs, tf.train.latest_checkpoint(model_dir))


def test_the_stage_loss_is_softmax_over_cells_against_numpy(shapes_configs):
  configs = shapes_configs('--mask_head=semantic_segmentation')
  models = factory.build_models(configs.model, configs.geometry)
  rng = np.random.default_rng(0)
  image = rng.uniform(0, 255, [2, 64, 48, 3]).astype(np.float32)
  labels = rng.integers(0, 5, [2, 64, 48]).astype(np.uint8)
  labels[:, 40:] = 255  # Padding: not counted.
  batch = {'image': tf.constant(image),
           'image_size': tf.constant([[64, 48]] * 2),
           'semantic_labels': tf.constant(labels)}
  outputs = models.train_model(models.system.model_inputs(batch, True))
  losses = models.system.compute_losses(outputs, batch)
  assert set(losses) == {'semantic', 'total'}
  logits = outputs['semantic_logits'].numpy().astype(np.float64)
  assert logits.shape == (2, 8, 6, 4 + 1)  # Stride 8, K + 1 classes.
  cells = labels[:, 4::8, 4::8].astype(np.int64)  # Cell centres.
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  valid = cells != 255
  expected = -np.take_along_axis(
      log_p, np.where(valid, cells, 0)[..., None], -1)[..., 0][valid].mean()
  np.testing.assert_allclose(losses['total'].numpy(), expected, rtol=1e-5)


def test_bin_train_runs_the_stage_and_scores_it_by_mean_iou(pretrained):
  """It learns; it is evaluated on its cadence and at the end (which
  --eval_every need not divide; the last step is scored once) by mean IoU,
  which also picks MODEL_DIR/best."""
  model_dir, lines = pretrained
  evals = [line.split(':')[0] for line in lines
           if line.startswith('eval at step')]
  assert evals == ['eval at step 4', f'eval at step {STEPS}']
  losses = [float(line.split('loss ')[1].split()[0]) for line in lines
            if line.startswith('step ')]
  assert len(losses) == STEPS and losses[-1] < 0.75 * losses[0]
  metrics = json.load(open(model_dir / 'metrics.json'))
  assert metrics['step'] == STEPS and 'mask' not in metrics
  iou = metrics['semantic']['IoU']
  assert list(iou) == ['background', 'circle', 'square', 'triangle',
                       'cross']
  assert 0 < metrics['semantic']['mIoU'] <= 100
  assert any(line.startswith(f'eval at step {STEPS}: semantic mIoU')
             for line in lines)
  best = json.load(open(model_dir / 'best' / 'best.json'))
  scores = {int(line.split(':')[0].split()[-1]):
            float(line.split('semantic mIoU ')[1]) for line in lines
            if line.startswith('eval at step')}
  best_step = max(scores, key=scores.get)
  assert best['step'] == best_step
  assert round(best['semantic']['mIoU'], 1) == scores[best_step]


def test_masklab_from_the_stage_has_its_semantic_map(pretrained,
                                                     initialised):
  """The backbone and the semantic logits load (the box classifier's conv5
  from res5): MaskLab's semantic map before any step is the stage's. One
  started from scratch has another (the test can fail)."""
  seg_dir, _ = pretrained
  model_dir, printed = initialised
  assert 'bin/train semantic_segmentation checkpoint' in printed
  assert 'its own not used: none' in printed
  report = json.load(open(model_dir / checkpoints.REPORT_FILE))
  assert 'mask_head/semantic_logits/kernel' in report['matched']
  assert sum(e.endswith('(from res5)') for e in report['matched']) > 0
  fresh = {e.split('/')[0] for e in report['unmatched_ours']}
  assert fresh == {'rpn_head', 'box_classifier', 'mask_head'}
  assert 'mask_head/semantic_logits/kernel' not in report['unmatched_ours']

  _, stage = _restored(seg_dir)
  configs, masklab = _restored(model_dir)
  image = np.random.default_rng(1).uniform(0, 255, [1, 96, 96, 3])
  inputs = {'image': tf.constant(image, tf.float32),
            'image_size': tf.constant([[96, 96]])}
  expected = stage.inference_model(inputs)
  got = masklab.inference_model(inputs)
  np.testing.assert_allclose(got['semantic_logits'],
                             expected['semantic_logits'], atol=1e-4)
  scratch = factory.build_models(configs.model, configs.geometry)
  assert not np.allclose(scratch.inference_model(inputs)['semantic_logits'],
                         expected['semantic_logits'], atol=1e-2)
  # The duplicated conv5 starts as the stage's res5.
  conv5 = masklab.train_model.get_layer('box_classifier').conv5
  res5 = [layer for layer in stage.backbone.layers if layer.weights][-1]
  assert conv5.weights[0].shape == res5.weights[0].shape
  np.testing.assert_array_equal(conv5.weights[0].numpy(),
                                res5.weights[0].numpy())


def test_a_run_with_other_classes_keeps_what_fits(initialised,
                                                  shapes_configs, tmp_path):
  """MaskLab into MaskLab with 7 classes (from a best/ folder, configs one
  folder up): the class-sized weights start fresh, with both shapes."""
  model_dir, _ = initialised
  best = model_dir / 'best'
  best.mkdir()
  for name in os.listdir(model_dir):
    if name.startswith('ckpt-0.') or name == 'checkpoint':
      os.link(model_dir / name, best / name)
  other = trainer_lib.Trainer(
      shapes_configs(f'--init_checkpoint={best}', '--num_classes=7'),
      str(tmp_path))
  assert 'bin/train masklab checkpoint' in other.restore_or_initialise()
  report = json.load(open(tmp_path / checkpoints.REPORT_FILE))
  resized = [e for e in report['unmatched_ours'] if '(checkpoint:' in e]
  assert any(e.startswith('mask_head/semantic_logits/kernel (checkpoint: '
                          '[1, 1, 512, 5], ours: [1, 1, 512, 8])')
             for e in resized), resized
  assert any(e.startswith('box_classifier/') for e in resized)
  assert not [e for e in report['unmatched_ours'] if '(checkpoint:' not in e]
  assert 'rpn_head/conv/kernel' in report['matched']


def test_the_stage_is_neither_exported_nor_served(pretrained, tmp_path):
  seg_dir, _ = pretrained
  with pytest.raises(app.UsageError, match='is a pretraining stage: it '
                     'returns a semantic map and no detections'):
    with tool_flags(export_tool, f'--model_dir={seg_dir}',
                    f'--export_dir={tmp_path}') as argv:
      export_tool.main(argv)


def test_the_stage_refuses_a_direction_loss(shapes_configs):
  with pytest.raises(ValueError, match='predicts no direction logits'):
    configs = shapes_configs('--mask_head=semantic_segmentation',
                             '--direction_loss_weight=1')
    factory.build_models(configs.model, configs.geometry)
