"""--deterministic: the same seed gives the same losses at every step and the
same weights, across processes, and a killed run resumed from its last
checkpoint ends where an uninterrupted one does.

Each run is its own process (tests/training/determinism_run.py): what made
runs differ before (Grappler's rewrites, XLA's scatter-add, unseeded
samplers restarting with the process) differs between processes, not
necessarily within one.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

SCRIPT = os.path.join(os.path.dirname(__file__), 'determinism_run.py')
STEPS = 4


def start(shapes_train, model_dir, seed, steps, kill_at=0, *extra):
  annotations, images = shapes_train
  return subprocess.Popen(
      [sys.executable, SCRIPT, annotations, images, str(model_dir), str(seed),
       str(steps), str(kill_at), *extra],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, allowed=(0,)):
  output, _ = process.communicate(timeout=600)
  assert process.returncode in allowed, output[-3000:]
  return output


def losses(model_dir):
  """step -> the line of losses the run wrote last for it (a resumed run
  writes the redone step again)."""
  lines = (model_dir / 'losses.txt').read_text().splitlines()
  return {int(line.split()[0]): line for line in lines}


def weights(model_dir):
  """name -> value of the latest checkpoint's model variables, samplers'
  generator states and data position."""
  reader = tf.train.load_checkpoint(str(model_dir))
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if name.startswith(('model/', 'generators/', 'data_position/'))}


@pytest.fixture(scope='module')
def runs(shapes_train, tmp_path_factory):
  """Model dirs: `same` and `again` (seed 1, 4 steps), `other` (seed 2,
  1 step) and `resumed` (seed 1, SIGKILLed after step 2, whose work since
  the step-1 checkpoint is lost, then restarted to step 4)."""
  root = tmp_path_factory.mktemp('determinism')
  dirs = {name: root / name for name in ('same', 'again', 'other', 'resumed')}
  first = [start(shapes_train, dirs['same'], 1, STEPS),
           start(shapes_train, dirs['again'], 1, STEPS),
           start(shapes_train, dirs['other'], 2, 1),
           start(shapes_train, dirs['resumed'], 1, STEPS, 2)]
  for process in first[:3]:
    finish(process)
  finish(first[3], allowed=(-9,))
  assert sorted(losses(dirs['resumed'])) == [1, 2]
  output = finish(start(shapes_train, dirs['resumed'], 1, STEPS))
  assert 'resumed from' in output, output[-3000:]
  assert 'ckpt-1 ' in output, output[-3000:]
  return dirs


def test_same_seed_same_losses_and_weights(runs):
  assert losses(runs['same']) == losses(runs['again'])
  same, again = weights(runs['same']), weights(runs['again'])
  assert sorted(same) == sorted(again)
  different = [name for name in same
               if not np.array_equal(same[name], again[name])]
  assert not different, different


def test_another_seed_differs(runs):
  assert losses(runs['other'])[1] != losses(runs['same'])[1]


def test_killed_and_resumed_run_ends_as_the_uninterrupted_one(runs):
  assert losses(runs['resumed']) == losses(runs['same'])
  resumed, same = weights(runs['resumed']), weights(runs['same'])
  different = [name for name in same
               if not np.array_equal(same[name], resumed[name])]
  assert not different, different


@pytest.mark.slow
def test_mirrored_over_two_cpus_repeats_and_resumes(shapes_train, tmp_path):
  """The same under `mirrored` over two logical CPUs: each replica draws
  its own samples from its own generator stream and the gradients are
  all-reduced, and still two runs, and a killed and resumed one, agree.

  With --use_sync_bn: plain batch norm keeps each replica's moving
  statistics apart (ON_READ variables) and a checkpoint holds only their
  mean, so a resumed run's statistics agree with the uninterrupted run's to
  round-off only (losses and trainable weights still bit for bit)."""
  mirrored = ('--strategy=mirrored', '--num_cpu_replicas=2', '--use_sync_bn')
  dirs = {name: tmp_path / name for name in ('same', 'again', 'resumed')}
  first = [start(shapes_train, dirs['same'], 1, STEPS, 0, *mirrored),
           start(shapes_train, dirs['again'], 1, STEPS, 0, *mirrored),
           start(shapes_train, dirs['resumed'], 1, STEPS, 2, *mirrored)]
  for process in first[:2]:
    finish(process)
  finish(first[2], allowed=(-9,))
  output = finish(start(shapes_train, dirs['resumed'], 1, STEPS, 0,
                        *mirrored))
  assert 'ckpt-1 ' in output, output[-3000:]
  same = weights(dirs['same'])
  for name in ('again', 'resumed'):
    assert losses(dirs[name]) == losses(dirs['same']), name
    other = weights(dirs[name])
    different = [key for key in same
                 if not np.array_equal(same[key], other[key])]
    assert not different, (name, different)
