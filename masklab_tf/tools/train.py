"""Trains MaskLab (bin/train), evaluating on the val set as it goes.

Usage:
  bin/train --flagfile=configs/shapes_cpu.flags --model_dir=runs/shapes \
      --train_annotations=demo_data/train/annotations.json \
      --train_images=demo_data/train/images \
      --val_annotations=demo_data/val/annotations.json \
      --val_images=demo_data/val/images [--train_steps=N ...]

Every config field is a flag (configs/*.flags set them; the command line
overrides). Killed runs resume from the last checkpoint in --model_dir.
With a val set, COCO box and mask AP are computed every --eval_every steps
and at the end (metrics.json); the best checkpoint by mask AP (AR@100 for
InstanceFCN's proposals) is kept in MODEL_DIR/best.
"""

import json
import os

from absl import app
from absl import flags
import tensorflow as tf

from masklab_tf import config
from masklab_tf.evaluation import evaluator as evaluator_lib
from masklab_tf.training import hooks
from masklab_tf.training import strategy
from masklab_tf.training import trainer as trainer_lib

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
  os.makedirs(FLAGS.model_dir, exist_ok=True)
  trainer = trainer_lib.Trainer(configs, FLAGS.model_dir)
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
      self.manager.save(checkpoint_number=step)
      evaluator_lib.write_metrics(self.path, metrics, step=step)


if __name__ == '__main__':
  define_flags()
  app.run(main)
