"""Subprocess side of tests/training/test_determinism.py: one tiny
deterministic training, its exact losses appended to MODEL_DIR/losses.txt
(`step total rpn_score ...`, Python reprs) after every step.

  python tests/training/determinism_run.py ANNOTATIONS IMAGES MODEL_DIR \
      SEED STEPS [KILL_AT] [FLAG ...]

With KILL_AT, the process SIGKILLs itself right after that step
(checkpoint_every=2 saves at steps 1, 3, ...: after step 2 its work is
lost): a restarted run must resume from the last checkpoint and redo it.
"""

import os
import signal
import sys

sys.path.insert(0, '.')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import conftest  # pylint: disable=g-import-not-at-top
from masklab_tf import config  # pylint: disable=g-import-not-at-top
from masklab_tf.training import hooks  # pylint: disable=g-import-not-at-top
from masklab_tf.training import strategy  # pylint: disable=g-import-not-at-top
from masklab_tf.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top


def main(annotations, images, model_dir, seed, steps, kill_at='0', *extra):
  configs = config.from_flagfile('configs/shapes_cpu.flags', (
      *conftest.TINY_TRAINING, '--deterministic', f'--seed={seed}',
      f'--train_steps={steps}', '--image_summary_every=0',
      f'--train_annotations={annotations}', f'--train_images={images}',
      *extra))
  if configs.train.strategy == 'mirrored':
    strategy.split_cpu(configs.train.num_cpu_replicas)
  trainer = trainer_lib.Trainer(configs, model_dir)
  print(trainer.restore_or_initialise(), flush=True)

  def after_step(step, losses):
    with open(os.path.join(model_dir, 'losses.txt'), 'a') as f:
      f.write(' '.join([str(step)] + [repr(losses[k]) for k in sorted(
          losses)]) + '\n')
    if step == int(kill_at):
      os.kill(os.getpid(), signal.SIGKILL)

  trainer.train(hooks=[hooks.AfterStep(after_step)])


if __name__ == '__main__':
  main(*sys.argv[1:])
