"""Trains MaskLab (bin/train), evaluating on the val set as it goes.

Usage:
  bin/train --flagfile=configs/shapes_cpu.flags --model_dir=runs/shapes \
      --train_annotations=demo_data/train/annotations.json \
      --train_images=demo_data/train/images \
      --val_annotations=demo_data/val/annotations.json \
      --val_images=demo_data/val/images [--train_steps=N ...]

Every config field is a flag (configs/*.flags set them; the command line
overrides); without --num_classes, the number of the training set's
categories. Killed runs resume from the last checkpoint in --model_dir.
One training at a time writes a model_dir: a second bin/train on it stops
at once with the first one's PID. An unwritable model_dir, a training set
that is empty or has more categories than --num_classes, and a checkpoint
that cannot be saved (a full disk: the last complete one stays intact) end
the run with one line that says what to change.
With a val set, COCO box and mask AP are computed every --eval_every steps
and at the end (metrics.json); the best checkpoint by mask AP (AR@100 for
InstanceFCN's proposals) is kept in MODEL_DIR/best.
"""

import contextlib
import json
import os

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from masklab_tf import config
from masklab_tf.evaluation import evaluator as evaluator_lib
from masklab_tf.training import hooks
from masklab_tf.training import model_dir as model_dir_lib
from masklab_tf.training import strategy
from masklab_tf.training import trainer as trainer_lib
from masklab_tf.training import training_set

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines this tool's flags on absl's FLAGS. The launcher (bin/) calls
  it, not the import: tools that share flag names can then be imported
  into one process (tests, notebooks) side by side."""
  flags.DEFINE_string('model_dir', None, 'Checkpoints, summaries, metrics.')
  flags.mark_flag_as_required('model_dir')
  config.define_all_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  configs = config.all_from_flags()
  val = configs.data.val
  if val.tfrecords or val.categories:
    raise app.UsageError('--val_tfrecords, --val_categories: evaluation '
                         'reads a COCO json and its images, the ground truth '
                         'COCOeval needs: set --val_annotations and '
                         '--val_images')
  if configs.train.strategy == 'mirrored':
    strategy.split_cpu(configs.train.num_cpu_replicas)
  # Only the chief writes model_dir (other workers save into scratch
  # folders below it), so only the chief locks it.
  run_strategy = strategy.make_strategy(configs.train)
  try:
    with contextlib.ExitStack() as stack:
      if strategy.is_chief(run_strategy):
        model_dir_lib.check_writable(FLAGS.model_dir)
        stack.enter_context(model_dir_lib.ModelDirLock(FLAGS.model_dir))
        for folder in (FLAGS.model_dir, os.path.join(FLAGS.model_dir, 'best')):
          for path in model_dir_lib.remove_partial_saves(folder):
            logging.warning('removed %s, a checkpoint whose save never '
                            'completed', path)
      train(configs, run_strategy)
  except (model_dir_lib.ModelDirError, model_dir_lib.SaveFailed,
          training_set.DataError) as error:
    raise SystemExit(f'bin/train: error: {error}') from None


def train(configs: config.Configs, run_strategy) -> None:
  """Trains (and evaluates) into FLAGS.model_dir under `run_strategy`."""
  val = configs.data.val
  trainer = trainer_lib.Trainer(
      configs, FLAGS.model_dir, strategy=run_strategy,
      infer_num_classes=not FLAGS['num_classes'].present)
  configs = trainer.configs
  print(trainer.restore_or_initialise(), flush=True)
  evaluator = None
  if val.annotations:
    evaluator = evaluator_lib.Evaluator(configs, val.annotations, val.images)
  best = BestCheckpoint(trainer, FLAGS.model_dir)

  evaluated = {}  # step -> metrics, so the last step is evaluated once

  def evaluate_at(step):
    if step not in evaluated:
      evaluated[step] = evaluator.run(trainer.models.inference_model)
      best.update(step, evaluated[step])
    return evaluated[step]

  def after_step(step, _):
    every = configs.train.eval_every
    if evaluator and every and step % every == 0:
      evaluate_at(step)

  trainer.train(hooks=[hooks.AfterStep(after_step)])
  if evaluator:
    step = trainer.current_step
    metrics = evaluate_at(step)
    evaluator_lib.write_metrics(os.path.join(FLAGS.model_dir, 'metrics.json'),
                           metrics, step=step)
    print(evaluator_lib.format_table({f'step {step}': metrics}))


class BestCheckpoint:
  """Keeps the checkpoint with the best mask AP (AR@100 for class-agnostic
  proposals) in MODEL_DIR/best."""

  def __init__(self, trainer, model_dir):
    self.trainer = trainer
    self.path = os.path.join(model_dir, 'best', 'best.json')
    self.manager = tf.train.CheckpointManager(
        trainer.checkpoint, os.path.dirname(self.path), max_to_keep=1)
    self.best = -1.0
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.best = evaluator_lib.headline(json.load(f))[1]

  def update(self, step, metrics):
    name, value = evaluator_lib.headline(metrics)
    box = (f'box AP {metrics["box"]["AP"]:.1f}  ' if 'box' in metrics
           else '')
    print(f'eval at step {step}: {box}{name} {value:.1f}', flush=True)
    if value > self.best:
      self.best = value
      model_dir_lib.save(self.manager, step, check_interval=False)
      evaluator_lib.write_metrics(self.path, metrics, step=step)


if __name__ == '__main__':
  define_flags()
  app.run(main)
