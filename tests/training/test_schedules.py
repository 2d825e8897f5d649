"""The schedule built from Model Garden's classes equals the one it replaced
(trainer.learning_rate_at before training/schedules.py) at every step: to
float32 rounding against the formula in float64 numpy, and to one float32
rounding against that code itself, kept here verbatim."""

import math

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf import config
from masklab_tf.training import schedules
from masklab_tf.training import trainer as trainer_lib


def formula(step, cfg, total_steps=None):
  """The hand-written schedule, step by step, in float64."""
  warmup = min(1.0, (step + 1.0) / max(cfg.warmup_steps, 1))
  if cfg.lr_schedule == 'cosine':
    total = cfg.train_steps if total_steps is None else total_steps
    progress = min(max((step - cfg.warmup_steps) /
                       max(total - cfg.warmup_steps, 1.0), 0.0), 1.0)
    decay = 0.5 * (1.0 + math.cos(math.pi * progress))
  else:
    decay = cfg.lr_decay_rate ** sum(step >= b for b in cfg.lr_decay_steps)
  return cfg.learning_rate * warmup * decay


def old_learning_rate_at(step, cfg, total_steps=None):
  """trainer.learning_rate_at as it was (float32 TF), verbatim."""
  step = tf.cast(step, tf.float32)
  warmup = tf.minimum(1.0, (step + 1.0) / max(cfg.warmup_steps, 1))
  if cfg.lr_schedule == 'cosine':
    total = tf.cast(cfg.train_steps if total_steps is None else total_steps,
                    tf.float32)
    progress = tf.clip_by_value(
        (step - cfg.warmup_steps) /
        tf.maximum(total - cfg.warmup_steps, 1.0), 0.0, 1.0)
    decay = 0.5 * (1.0 + tf.cos(math.pi * progress))
  elif cfg.lr_schedule == 'step':
    passed = tf.add_n([tf.cast(step >= b, tf.float32)
                       for b in cfg.lr_decay_steps] or [0.0])
    decay = cfg.lr_decay_rate ** passed
  else:
    raise ValueError(f'unknown lr_schedule {cfg.lr_schedule!r}')
  return cfg.learning_rate * warmup * decay


def close(actual, desired, cfg):
  """float32 rounding: cos near pi loses digits, so also 1e-7 of the peak."""
  np.testing.assert_allclose(actual, desired, rtol=1e-6,
                             atol=1e-7 * cfg.learning_rate)


def schedule_values(cfg, steps, total_steps=None):
  schedule = schedules.learning_rate_schedule(cfg, total_steps)
  return np.array([float(schedule(tf.constant(s, tf.int64)))
                   for s in steps])


CONFIGS = {
    'cosine': dict(learning_rate=0.1, warmup_steps=10, train_steps=110),
    'cosine, long': dict(learning_rate=0.02, warmup_steps=100,
                         train_steps=1000),
    'cosine, warmup 1': dict(learning_rate=0.1, warmup_steps=1,
                             train_steps=20),
    'cosine, no warmup': dict(learning_rate=0.1, warmup_steps=0,
                              train_steps=20),
    'cosine, ends in the warmup': dict(learning_rate=0.1, warmup_steps=10,
                                       train_steps=6),
    'cosine, ends one after it': dict(learning_rate=0.1, warmup_steps=10,
                                      train_steps=11),
    'step': dict(learning_rate=0.1, warmup_steps=1, lr_schedule='step',
                 lr_decay_steps=(5, 8)),
    'step, unsorted and repeated': dict(learning_rate=0.1, warmup_steps=3,
                                        lr_schedule='step',
                                        lr_decay_steps=(9, 4, 4),
                                        lr_decay_rate=0.5),
    'step, a boundary inside the warmup': dict(
        learning_rate=0.1, warmup_steps=10, lr_schedule='step',
        lr_decay_steps=(0, 4, 12)),
    'step, no boundaries': dict(learning_rate=0.1, warmup_steps=4,
                                lr_schedule='step'),
}


@pytest.mark.parametrize('name', CONFIGS)
def test_equals_the_formula_at_every_step(name):
  cfg = config.TrainConfig(**CONFIGS[name])
  end = max(cfg.train_steps, cfg.warmup_steps, 20) + 5
  steps = range(end)
  values = schedule_values(cfg, steps)
  close(values, [formula(s, cfg) for s in steps], cfg)
  old = np.array([float(old_learning_rate_at(s, cfg)) for s in steps],
                 np.float32)
  np.testing.assert_allclose(values.astype(np.float32), old, rtol=2.5e-7,
                             atol=0)


def test_the_numbers():
  cfg = config.TrainConfig(learning_rate=0.1, warmup_steps=10,
                           train_steps=110)
  values = schedule_values(cfg, [0, 1, 8, 9, 10, 11, 60, 109, 110, 200])
  np.testing.assert_allclose(values, [
      0.01,   # (0 + 1) / 10 of the rate: the first step trains, unlike
              # LinearWarmup's usual start at warmup_learning_rate=0
      0.02, 0.09,
      0.1,    # full rate one step before warmup_steps
      0.1,    # the cosine starts at step 10 ...
      0.05 * (1 + math.cos(math.pi / 100)),
      0.05,   # ... is halfway at 60 ...
      0.05 * (1 + math.cos(math.pi * 99 / 100)),
      0.0, 0.0], rtol=1e-6, atol=1e-8)
  step = config.TrainConfig(learning_rate=0.1, warmup_steps=10,
                            lr_schedule='step', lr_decay_steps=(4, 12))
  # A boundary inside the warmup scales the ramp; decay at the boundary.
  np.testing.assert_allclose(
      schedule_values(step, [0, 3, 4, 9, 11, 12]),
      [0.01, 0.04, 0.005, 0.01, 0.01, 0.001], rtol=1e-6)


def test_the_trainer_uses_it():
  assert trainer_lib.schedules is schedules


def test_a_re_estimated_end_applies_without_retracing():
  cfg = config.TrainConfig(learning_rate=0.1, warmup_steps=10,
                           train_steps=110)
  total_steps = tf.Variable(110, dtype=tf.int64, trainable=False)
  step = tf.Variable(0, dtype=tf.int64, trainable=False)
  rate = tf.function(
      lambda: schedules.learning_rate_at(step, cfg, total_steps))
  for total in (110, 210, 61, 5):
    total_steps.assign(total)
    for s in (0, 9, 10, 35, 60, 150, 300):
      step.assign(s)
      close(float(rate()), formula(s, cfg, total), cfg)
  assert rate.experimental_get_tracing_count() == 1


def test_unknown_schedule():
  cfg = config.TrainConfig(lr_schedule='linear')
  with pytest.raises(ValueError, match='unknown lr_schedule'):
    schedules.learning_rate_at(0, cfg)
