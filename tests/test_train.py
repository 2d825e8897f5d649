"""The training loop: steps, checkpoints and resume, the NaN guard."""

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf import config
from masklab_tf import train

TINY = ('--backbone_depth=10', '--rpn_head_channels=32',
        '--num_proposals=30', '--test_num_proposals=30',
        '--rpn_pre_nms_top_k=300', '--num_sampled_rois=8',
        '--hypercolumn_channels=8', '--refine_filters=16',
        '--max_detections=5', '--min_sizes=96', '--eval_min_size=96',
        '--max_size=96', '--batch_size=2', '--log_every=1',
        '--checkpoint_every=2', '--warmup_steps=2', '--deterministic')


def configs_for(shapes_train, *overrides):
  annotations, images = shapes_train
  return config.from_flagfile(
      'configs/shapes_cpu.flags',
      TINY + (f'--train_annotations={annotations}',
              f'--train_images={images}') + overrides)


def test_learning_rate_schedule():
  cfg = config.TrainConfig(learning_rate=0.1, warmup_steps=10,
                           train_steps=110)
  assert float(train.learning_rate_at(0, cfg)) == pytest.approx(0.01)
  assert float(train.learning_rate_at(9, cfg)) == pytest.approx(0.1)
  assert float(train.learning_rate_at(60, cfg)) == pytest.approx(0.05)
  assert float(train.learning_rate_at(110, cfg)) == pytest.approx(0.0)
  step = config.TrainConfig(learning_rate=0.1, warmup_steps=1,
                            lr_schedule='step', lr_decay_steps=(5, 8))
  assert float(train.learning_rate_at(6, step)) == pytest.approx(0.01)
  assert float(train.learning_rate_at(9, step)) == pytest.approx(0.001)


def test_resume_continues_at_the_saved_step(shapes_train, tmp_path):
  configs = configs_for(shapes_train, '--train_steps=3')
  first = train.Trainer(configs, str(tmp_path))
  assert first.restore_or_initialise() == 'initialised from scratch'
  first.train(num_steps=2)
  weights = [v.numpy() for v in first.models.train_model.weights]
  # A new process-like trainer on the same model_dir picks up step 2.
  second = train.Trainer(configs, str(tmp_path))
  assert 'at step 2' in second.restore_or_initialise()
  for saved, restored in zip(weights, second.models.train_model.weights):
    np.testing.assert_array_equal(saved, restored.numpy())
  losses = second.train()
  assert int(second.step) == 3 and np.isfinite(losses['total'])
  assert second.manager.latest_checkpoint.endswith('ckpt-3')


def test_non_finite_steps_are_skipped_then_stop(shapes_train, tmp_path):
  configs = configs_for(shapes_train, '--train_steps=5',
                        '--max_bad_steps=2')
  trainer = train.Trainer(configs, str(tmp_path))
  trainer.restore_or_initialise()
  before = [v.numpy() for v in trainer.models.train_model.trainable_weights]
  batch = next(iter(trainer.dataset))
  bad = dict(batch)
  bad['image'] = tf.cast(batch['image'], tf.float32) * np.nan
  _, applied = trainer._train_step(bad)
  assert not bool(applied) and int(trainer.bad_steps) == 1
  for old, new in zip(before, trainer.models.train_model.trainable_weights):
    np.testing.assert_array_equal(old, new.numpy())
  _, applied = trainer._train_step(batch)
  assert bool(applied) and int(trainer.bad_steps) == 0


def test_train_tool_evaluates_on_its_own_cadence(shapes_dir, tmp_path):
  """--eval_every need not divide --log_every; the last step is scored once."""
  import json
  import os
  import subprocess
  import sys
  model_dir = tmp_path / 'model'
  result = subprocess.run(
      [sys.executable, 'bin/train', '--flagfile=configs/shapes_cpu.flags',
       f'--model_dir={model_dir}', *TINY, '--log_every=3',
       '--train_steps=3', '--eval_every=2',
       f'--train_annotations={shapes_dir}/train/annotations.json',
       f'--train_images={shapes_dir}/train/images',
       f'--val_annotations={shapes_dir}/val/annotations.json',
       f'--val_images={shapes_dir}/val/images'],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  evals = [line for line in result.stdout.splitlines()
           if line.startswith('eval at step')]
  assert [line.split(':')[0] for line in evals] == ['eval at step 2',
                                                    'eval at step 3']
  metrics = json.load(open(model_dir / 'metrics.json'))
  assert metrics['step'] == 3 and 'AP' in metrics['mask']
  assert os.path.exists(model_dir / 'best' / 'best.json')
