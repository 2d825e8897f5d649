"""The training loop: steps, checkpoints and resume, the NaN guard."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf import config
from masklab_tf.training import trainer as trainer_lib

@pytest.fixture(scope='module')
def two_steps(shapes_configs, tmp_path_factory):
  """A trainer after 2 steps (checkpoint at 2, pictures at step 2), its
  weights then, and the trainer (its train step traced)."""
  model_dir = tmp_path_factory.mktemp('two_steps')
  configs = shapes_configs('--train_steps=3',
                        '--image_summary_every=2')
  trainer = trainer_lib.Trainer(configs, str(model_dir))
  assert trainer.restore_or_initialise() == 'initialised from scratch'
  trainer.train(num_steps=2)
  weights = [v.numpy() for v in trainer.models.train_model.weights]
  return configs, model_dir, weights, trainer


def test_resume_continues_at_the_saved_step(two_steps):
  configs, model_dir, weights, _ = two_steps
  # A new process-like trainer on the same model_dir picks up step 2.
  second = trainer_lib.Trainer(configs, str(model_dir))
  assert 'at step 2' in second.restore_or_initialise()
  for saved, restored in zip(weights, second.models.train_model.weights):
    np.testing.assert_array_equal(saved, restored.numpy())
  losses = second.train()
  assert second.current_step == 3 and np.isfinite(losses['total'])
  assert second.manager.latest_checkpoint.endswith('ckpt-3')


def test_tensorboard_gets_loss_scalars_and_prediction_pictures(two_steps):
  import glob
  _, model_dir, _, _ = two_steps
  tags, pictures = set(), {}
  for path in glob.glob(str(model_dir / 'train' / 'events.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add(value.tag)
        if value.tag == 'predictions':
          pictures[event.step] = value.tensor.string_val
  assert {'loss/total', 'loss/mask_refined', 'learning_rate'} <= tags
  assert list(pictures) == [2]  # Every 2 steps, and before step 3.
  width, height, *pngs = pictures[2]
  assert len(pngs) == 2  # The first two images of the batch.
  picture = tf.io.decode_png(pngs[0]).numpy()
  # 96-px input: the predictions panel, a 2-px gap, the semantic map.
  assert picture.shape == (96, 2 * 96 + 2, 3)
  assert (int(width), int(height)) == (2 * 96 + 2, 96)


def test_non_finite_steps_are_skipped_then_stop(two_steps, tmp_path):
  # The fixture's trainer, its train step already traced (a new Trainer
  # costs a model build and a trace). _train_step writes no checkpoint or
  # summary, which the other tests of two_steps read.
  trainer = two_steps[3]
  before = [v.numpy() for v in trainer.models.train_model.trainable_weights]
  batch = next(iter(trainer.make_dataset()))
  bad = dict(batch)
  bad['image'] = tf.cast(batch['image'], tf.float32) * np.nan
  _, applied = trainer._train_step(bad)
  assert not bool(applied) and int(trainer.bad_steps) == 1
  for old, new in zip(before, trainer.models.train_model.trainable_weights):
    np.testing.assert_array_equal(old, new.numpy())
  _, applied = trainer._train_step(batch)
  assert bool(applied) and int(trainer.bad_steps) == 0
  # max_bad_steps in a row stop training with a clear message, after saving
  # the last good weights. The loop runs on NaN batches (the float input's
  # step is traced above); it writes into a scratch folder, not the
  # fixture's, which the other tests read.
  trainer.configs = trainer.configs._replace(train=dataclasses.replace(
      trainer.configs.train, max_bad_steps=2, image_summary_every=0,
      train_steps=100))
  trainer.model_dir = str(tmp_path)
  trainer.manager = tf.train.CheckpointManager(
      trainer.checkpoint, str(tmp_path), max_to_keep=1)
  trainer.make_dataset = lambda: tf.data.Dataset.from_tensors(bad).repeat()
  with pytest.raises(trainer_lib.TrainingStopped,
                     match='2 non-finite steps in a row.*lower the learning'):
    trainer.train(num_steps=5)
  assert trainer.manager.latest_checkpoint


def test_kill_during_save_leaves_a_restorable_latest(shapes_train, tmp_path):
  """SIGKILL a process that saves back to back, twice at random moments:
  every restart restores "latest" (all objects matched) at the last save
  it reported, or at the next one if the kill fell between that save's
  completion and its report.
  """
  import random
  import subprocess
  import sys
  import time
  script = os.path.join(os.path.dirname(__file__), 'save_loop.py')
  model_dir = str(tmp_path / 'model')
  rng = random.Random(0)
  last_saved = None
  # All three start now: each imports TensorFlow while the one before runs,
  # and builds its Trainer and resumes only once told `go`, after the kill.
  processes = []
  for kill in range(3):
    with open(tmp_path / f'stderr{kill}.txt', 'w') as stderr:
      processes.append(subprocess.Popen(
          [sys.executable, script, *shapes_train, model_dir],
          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
          text=True))
  try:
    for kill, process in enumerate(processes):
      process.stdin.write('go\n')
      process.stdin.flush()
      first = process.stdout.readline()
      if last_saved is None:
        assert first.startswith('initialised from scratch'), (
            first, (tmp_path / f'stderr{kill}.txt').read_text()[-2000:])
      else:
        assert first.startswith('resumed from'), (
            first, (tmp_path / f'stderr{kill}.txt').read_text()[-2000:])
        step = int(first.split('at step ')[1])
        assert step in (last_saved, last_saved + 1), (first, last_saved)
        last_saved = step
      if kill == 2:
        break
      line = process.stdout.readline()  # The first save of this run is done.
      assert line.startswith('saved'), line
      time.sleep(rng.uniform(0.0, 0.5))
      process.kill()
      process.wait()
      lines = [line] + process.stdout.read().splitlines()
      last_saved = max(int(l.split()[1]) for l in lines
                       if l.startswith('saved'))
  finally:
    for process in processes:
      process.kill()
      process.wait()


def test_the_run_records_its_class_names(two_steps):
  """Beside configs.json, for bin/export's SavedModel (tools/export.py)."""
  import json
  _, model_dir, _, _ = two_steps
  with open(model_dir / 'categories.json') as f:
    categories = json.load(f)['categories']
  assert categories == [{'id': 1, 'name': 'circle'},
                        {'id': 2, 'name': 'square'},
                        {'id': 3, 'name': 'triangle'},
                        {'id': 4, 'name': 'cross'}]
