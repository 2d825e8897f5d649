"""Subprocess side of tests/test_train.py's kill-during-save test.

Imports TensorFlow, then waits for `go` on stdin: the test starts all its
processes at once, so that this import overlaps the previous process's run,
and says `go` once that process is killed. Only then does it build the
Trainer on MODEL_DIR and resume from it (printing the resume line), as a
restarted process would; then it saves checkpoints back to back, forever,
printing `saved N` after each: whenever the test kills it, it is most
likely inside a save.

  python tests/save_loop.py ANNOTATIONS IMAGES MODEL_DIR
"""

import sys

sys.path.insert(0, '.')

from masklab_tf import config  # pylint: disable=g-import-not-at-top
from masklab_tf.training import trainer as trainer_lib


def main(annotations, images, model_dir):
  if sys.stdin.readline().strip() != 'go':
    return
  configs = config.from_flagfile('configs/shapes_cpu.flags', (
      '--backbone_depth=10', '--rpn_head_channels=16',
      '--hypercolumn_channels=8', '--refine_filters=8',
      f'--train_annotations={annotations}', f'--train_images={images}',
      '--keep_checkpoints=2'))
  # Built after the previous process's kill: its CheckpointManager reads
  # MODEL_DIR's checkpoint state as a restarted run's would.
  trainer = trainer_lib.Trainer(configs, model_dir)
  print(trainer.restore_or_initialise(), flush=True)
  while True:
    trainer.step.assign_add(1)
    trainer.manager.save(checkpoint_number=trainer.step,
                         check_interval=False)
    print(f'saved {trainer.current_step}', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
