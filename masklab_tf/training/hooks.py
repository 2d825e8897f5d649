"""What plugs into the training loop from outside: evaluation on a
cadence, TensorBoard pictures, time budgets (benchmarks/harness/budget.py).

`Trainer.train(hooks=...)` calls each hook's `begin` before the first step,
`after_step` after every step (in order; any hook returning True ends
training after that step) and `end` after the final checkpoint.
"""

from __future__ import annotations


class Hook:
  """A training-loop hook; override what you need.

  Attributes:
    ends_training: True for hooks that decide when training ends (a time
      budget): train_steps then no longer bounds the loop.
  """

  ends_training = False

  def begin(self, trainer) -> None:
    """Before the first step; `trainer` is the running Trainer."""

  def after_step(self, trainer, step: int, losses: dict[str, float],
                 batch: dict) -> bool | None:
    """After every step.

    Args:
      trainer: the running Trainer.
      step: the step just taken (1-based).
      losses: its losses as floats.
      batch: the first replica's part of its batch.

    Returns:
      True to end training after this step.
    """

  def end(self, trainer) -> None:
    """After the final checkpoint."""


class AfterStep(Hook):
  """A hook from a function `fn(step, losses)` run after every step."""

  def __init__(self, fn):
    self.fn = fn

  def after_step(self, trainer, step, losses, batch):
    del trainer, batch
    self.fn(step, losses)
