"""The time budget: its estimates, and as a hook that ends training."""

import pytest

from benchmarks.harness import budget as budget_lib
from masklab_tf.training import hooks
from masklab_tf.training import trainer as trainer_lib


def test_time_budget_estimates_the_steps_it_allows():
  budget = budget_lib.TimeBudget(100.0, 'cpu', skip_steps=10)
  clock = [0.0]
  budget._clock = lambda: clock[0]  # pylint: disable=protected-access
  budget.start()
  clock[0] = 5.0  # Steps 1-10 (tracing) took 5 s: not a rate.
  assert budget.estimate_total_steps(10) is None
  clock[0] = 25.0  # Steps 11-50 at 2 steps/s; 75 s left.
  assert budget.estimate_total_steps(50) == 50 + 150
  assert not budget.spent()
  clock[0] = 100.0
  assert budget.spent()
  with pytest.raises(ValueError, match='wall or cpu'):
    budget_lib.TimeBudget(1.0, 'gpu')


class _Steps(hooks.Hook):
  """Records what the trainer hands its hooks."""

  def __init__(self):
    self.calls = []

  def begin(self, trainer):
    self.calls.append('begin')

  def after_step(self, trainer, step, losses, batch):
    self.calls.append((step, 'total' in losses, 'image' in batch))

  def end(self, trainer):
    self.calls.append('end')


def test_a_spent_budget_ends_training_past_train_steps(shapes_configs,
                                                       tmp_path):
  """train_steps=1 does not bound a run with a budget; the budget ends it,
  after the step on which it is spent, and every hook sees each step."""
  trainer = trainer_lib.Trainer(
      shapes_configs('--train_steps=1', '--image_summary_every=0'),
      str(tmp_path))
  trainer.restore_or_initialise()
  budget = budget_lib.TimeBudget(0.0, 'cpu')
  steps = _Steps()
  trainer.train(hooks=[steps, budget])
  assert trainer.current_step == 1
  assert steps.calls == ['begin', (1, True, True), 'end']
  budget.seconds = 1e9
  ended = _Steps()
  trainer.train(num_steps=2, hooks=[ended, budget])
  assert trainer.current_step == 3  # past train_steps=1
