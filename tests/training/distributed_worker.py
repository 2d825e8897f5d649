"""Subprocess side of tests/test_distributed.py (a process per strategy).

Strategies must be set up before TensorFlow initialises its devices, which
the pytest process has long done, so each check runs here:

  mirrored_vs_one ANNOTATIONS IMAGES OUT.json
      One training step on the same global batch of 4, on one device and
      under MirroredStrategy over 2 logical CPUs (2 images each); writes
      the losses and the largest weight difference after the step.
  multi_worker ANNOTATIONS IMAGES MODEL_DIR OUT.npz   (TF_CONFIG set)
      Two steps under MultiWorkerMirroredStrategy; writes the weights.

Sampling takes every candidate (sample sizes above the candidate counts),
so that the two runs see the same anchors and RoIs: with random sampling
each replica would draw its own subset, which is correct training but not
comparable number for number.
"""

import json
import sys

import numpy as np

sys.path.insert(0, '.')

from masklab_tf import config  # pylint: disable=g-import-not-at-top
from masklab_tf.training import strategy  # pylint: disable=g-import-not-at-top
from masklab_tf.training import trainer as trainer_lib

TINY = ('--backbone_depth=10', '--rpn_head_channels=16',
        '--num_proposals=6', '--test_num_proposals=6',
        '--rpn_pre_nms_top_k=100', '--rpn_batch_size_per_image=100000',
        '--num_sampled_rois=16', '--roi_foreground_fraction=1',
        '--hypercolumn_channels=8',
        '--refine_filters=8', '--max_detections=5', '--min_sizes=64',
        '--eval_min_size=64', '--max_size=64', '--log_every=1',
        '--checkpoint_every=1000', '--warmup_steps=1', '--deterministic',
        '--use_sync_bn', '--learning_rate=0.01')


def configs_for(annotations, images, *overrides):
  return config.from_flagfile(
      'configs/shapes_cpu.flags',
      TINY + (f'--train_annotations={annotations}',
              f'--train_images={images}') + overrides)


def mirrored_vs_one(annotations, images, out_path):
  strategy.split_cpu(2)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  configs = configs_for(annotations, images, '--batch_size=4')
  one = trainer_lib.Trainer(configs, out_path + '.one',
                      strategy=tf.distribute.get_strategy())
  mirrored = trainer_lib.Trainer(
      configs, out_path + '.mirrored',
      strategy=tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
  for source, target in zip(one.models.train_model.weights,
                            mirrored.models.train_model.weights):
    target.assign(source)
  before = [w.numpy() for w in one.models.train_model.weights]
  # The single-device pipeline's first global batch, halved by hand.
  batch = next(iter(one.make_dataset()))
  halves = [{k: v[i * 2:(i + 1) * 2] for k, v in batch.items()}
            for i in range(2)]
  split = mirrored.strategy.experimental_distribute_values_from_function(
      lambda context: halves[context.replica_id_in_sync_group])
  one_losses, _ = one._train_step(batch)  # pylint: disable=protected-access
  mirrored_losses, _ = mirrored._train_step(split)  # pylint: disable=protected-access
  # Per weight: the largest difference between the two, and the largest
  # change the step made to it (what the difference is measured against).
  weights = {
      a.path if hasattr(a, 'path') else a.name: (
          float(np.max(np.abs(a.numpy() - b.numpy()))),
          float(np.max(np.abs(a.numpy() - start))))
      for a, b, start in zip(one.models.train_model.weights,
                             mirrored.models.train_model.weights, before)}
  with open(out_path, 'w') as f:
    json.dump({'one': {k: float(v) for k, v in one_losses.items()},
               'mirrored': {k: float(v) for k, v in mirrored_losses.items()},
               'weights': weights,
               'replicas': mirrored.strategy.num_replicas_in_sync}, f)


def multi_worker(annotations, images, model_dir, out_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  configs = configs_for(annotations, images, '--batch_size=4',
                        '--train_steps=2')
  trainer = trainer_lib.Trainer(configs, model_dir, strategy=strategy)
  trainer.restore_or_initialise()
  losses = trainer.train()
  np.savez(out_path, step=trainer.current_step, loss=losses['total'],
           replicas=strategy.num_replicas_in_sync,
           **{f'w{i}': v.numpy() for i, v in
              enumerate(trainer.models.train_model.weights)})


if __name__ == '__main__':
  mode, *args = sys.argv[1:]
  {'mirrored_vs_one': mirrored_vs_one, 'multi_worker': multi_worker}[mode](
      *args)
