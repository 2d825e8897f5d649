"""The learning-rate schedule, from Model Garden's schedule classes.

The rate at step s (counted from 0) is

  learning_rate * min(1, (s + 1) / W) * decay(s)

with W = warmup_steps and decay(s) either a cosine from 1 at step W to 0 at
`total_steps` (0.5 (1 + cos(pi p)), p = (s - W) / max(total_steps - W, 1)
clipped to [0, 1]) or step decay (lr_decay_rate to the number of boundaries
in lr_decay_steps that s has reached). Step 0 trains at learning_rate / W,
not 0, and the warmup multiplies the decayed rate.

Both factors are Model Garden schedules (official.modeling.optimization.
lr_schedule). Their product gives the hand-written float32 code's values at
every step to within 2 float32 ulps (tests/training/test_schedules.py):

  * min(1, (s + 1) / W) is `LinearWarmup` of the constant 1 over W - 1 steps
    from 1 / W: it reaches 1 at s = W - 1, as the formula does.
  * The cosine is `CosineDecayWithOffset` (offset W, over
    max(total_steps - W, 1) steps) inside a `LinearWarmup` from
    learning_rate over W steps, which holds it at learning_rate before W.
    The hold is needed because Keras' CosineDecay does not clip steps
    before its start: cos is even, so the rate would dip below the peak
    during the warmup.
  * Step decay is `PiecewiseConstantDecayWithOffset` with boundaries b - 1:
    Keras switches after a boundary (s > b), the formula at it (s >= b).

The factors multiply rather than nest as Model Garden's optimizer_factory
nests them (`LinearWarmup(after_warmup_lr_sched=decay)`). The nested form
draws a straight line from warmup_learning_rate to decay(warmup_steps) and
follows decay after: with warmup_steps = W it cannot give (s + 1) / W of the
rate (that line would have to end above the peak), with W - 1 it can, but
not when a step-decay boundary falls inside the warmup, where the formula
scales the ramp itself. The product gives both.

`total_steps` may be a tf.Variable (the Trainer's, which a TimeBudget
re-estimates while training): the cosine reads it at each call, so a traced
training step picks up a new end without retracing.
"""

from __future__ import annotations

import numbers
from typing import Callable

from official.modeling.optimization import lr_schedule
import tensorflow as tf

from masklab_tf import config as config_lib


class _StepsAfterWarmup:
  """max(total_steps - warmup_steps, 1), read when converted to a tensor.

  CosineDecay converts its `decay_steps` at every call; handing it this
  instead of a number keeps a `total_steps` variable live in a traced step.
  """

  def __init__(self, total_steps, warmup_steps: int):
    self._total_steps = total_steps
    self._warmup_steps = warmup_steps

  def __tf_tensor__(self, dtype=None, name=None):
    steps = tf.maximum(
        tf.cast(self._total_steps, tf.float32) - self._warmup_steps, 1.0,
        name=name)
    return steps if dtype is None else tf.cast(steps, dtype)


def _decay(cfg: config_lib.TrainConfig, total_steps):
  """learning_rate * decay(s): a schedule, or a float without decay."""
  base = cfg.learning_rate
  if cfg.lr_schedule == 'cosine':
    if isinstance(total_steps, numbers.Number):
      decay_steps = float(max(total_steps - cfg.warmup_steps, 1))
    else:
      decay_steps = _StepsAfterWarmup(total_steps, cfg.warmup_steps)
    cosine = lr_schedule.CosineDecayWithOffset(
        offset=cfg.warmup_steps, initial_learning_rate=base,
        decay_steps=decay_steps)
    return lr_schedule.LinearWarmup(
        after_warmup_lr_sched=cosine, warmup_steps=cfg.warmup_steps,
        warmup_learning_rate=base)
  if cfg.lr_schedule == 'step':
    boundaries = sorted(cfg.lr_decay_steps)
    if not boundaries:
      return base
    return lr_schedule.PiecewiseConstantDecayWithOffset(
        boundaries=[b - 1 for b in boundaries],
        values=[base * cfg.lr_decay_rate ** i
                for i in range(len(boundaries) + 1)])
  raise ValueError(f'unknown lr_schedule {cfg.lr_schedule!r}')


def learning_rate_schedule(cfg: config_lib.TrainConfig, total_steps=None
                           ) -> Callable[[tf.Tensor], tf.Tensor]:
  """step -> float32 learning rate (see the module docstring).

  Args:
    cfg: learning_rate, warmup_steps, lr_schedule, lr_decay_steps and
      lr_decay_rate are read.
    total_steps: where the cosine reaches 0: a number, a tf.Variable (or
      tensor) read at each call, or None for cfg.train_steps.
  """
  total_steps = cfg.train_steps if total_steps is None else total_steps
  warmup_steps = max(cfg.warmup_steps, 1)
  warmup = lr_schedule.LinearWarmup(
      after_warmup_lr_sched=1.0, warmup_steps=warmup_steps - 1,
      warmup_learning_rate=1.0 / warmup_steps)
  decay = _decay(cfg, total_steps)

  def learning_rate(step):
    decayed = decay(step) if callable(decay) else decay
    return warmup(step) * decayed

  return learning_rate


def learning_rate_at(step, cfg: config_lib.TrainConfig, total_steps=None
                     ) -> tf.Tensor:
  """The learning rate at `step`: `learning_rate_schedule(...)(step)`."""
  return learning_rate_schedule(cfg, total_steps)(step)
