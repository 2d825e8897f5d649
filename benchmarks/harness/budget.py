"""Training to a time budget: benchmarks compare systems at equal time.

`TimeBudget` is a training hook (masklab_tf/training/hooks.py): it ends
training when the budget is spent and moves the end of the cosine schedule
to the step count the budget is estimated to allow. Model Garden's loop
(benchmarks/systems/model_garden.py) uses its clock directly.
"""

from __future__ import annotations

import time

from masklab_tf.training import hooks

# Estimates are refreshed this often (steps).
ESTIMATE_EVERY = 50


class TimeBudget(hooks.Hook):
  """Training time allowed, in wall-clock or process CPU seconds.

  The clock starts at the first step (tracing counts) and covers training
  only. CPU mode counts all threads of this process (`time.process_time`),
  so other jobs on the machine do not change what a run gets.
  """

  ends_training = True

  def __init__(self, seconds: float, mode: str = 'wall',
               skip_steps: int = 10):
    """Args: seconds: the budget; mode: 'wall' or 'cpu'; skip_steps: steps
    left out of the rate estimate (tracing makes the first ones slow)."""
    if mode not in ('wall', 'cpu'):
      raise ValueError(f'budget mode must be wall or cpu, not {mode!r}')
    self.seconds, self.mode, self.skip_steps = seconds, mode, skip_steps
    self._start = None
    self._rate_start = None  # (step, clock) once the tracing steps are past

  def _clock(self) -> float:
    return time.time() if self.mode == 'wall' else time.process_time()

  def start(self) -> None:
    self._start = self._clock()

  def used(self) -> float:
    return self._clock() - self._start

  def spent(self) -> bool:
    return self.used() >= self.seconds

  def estimate_total_steps(self, step: int) -> int | None:
    """Steps the whole budget allows at the rate measured since skip_steps
    (None until there is a rate)."""
    if step < self.skip_steps:
      return None
    if self._rate_start is None or step <= self._rate_start[0]:
      self._rate_start = self._rate_start or (step, self._clock())
      return None
    rate = (step - self._rate_start[0]) / max(
        self._clock() - self._rate_start[1], 1e-9)
    return step + int(rate * max(self.seconds - self.used(), 0.0))

  def begin(self, trainer) -> None:
    self.start()

  def after_step(self, trainer, step, losses, batch) -> bool:
    del losses, batch
    if self.spent():
      return True
    if step % ESTIMATE_EVERY == 0 or step == self.skip_steps:
      total = self.estimate_total_steps(step)
      if total is not None:
        trainer.total_steps.assign(total)
    return False
