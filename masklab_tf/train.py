"""Training loop: tf.data under a tf.distribute strategy, checkpoints, resume.

One custom loop serves every strategy. Each replica's losses are divided by
the number of replicas, so that the all-reduced (summed) gradients are the
global batch's. A step whose loss or gradients are not finite on any replica
is skipped on all of them (the decision is all-reduced, then the update runs
under a cross-replica tf.cond) and reported; `max_bad_steps` in a row stop
the run with a clear message.

Checkpoints: tf.train.CheckpointManager every `checkpoint_every` steps and at
exit. The manager writes the checkpoint files before it rewrites the
`checkpoint` state file (atomically, by rename), so a kill during a save
leaves "latest" pointing at the previous complete checkpoint; a restart
restores it and continues at its step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

from absl import logging
import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.modeling import masklab


class TrainingStopped(RuntimeError):
  """Too many non-finite steps in a row."""


def make_strategy(cfg: config_lib.TrainConfig) -> tf.distribute.Strategy:
  """The tf.distribute strategy named by cfg.strategy."""
  if cfg.strategy == 'default':
    return tf.distribute.get_strategy()
  if cfg.strategy == 'mirrored':
    gpus = tf.config.list_logical_devices('GPU')
    if gpus or cfg.num_cpu_replicas <= 1:
      return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy(
        [f'/cpu:{i}' for i in range(cfg.num_cpu_replicas)])
  if cfg.strategy == 'multi_worker_mirrored':
    return tf.distribute.MultiWorkerMirroredStrategy()
  if cfg.strategy == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(cfg.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f'unknown strategy {cfg.strategy!r}: use default, '
                   'mirrored, multi_worker_mirrored or tpu')


def split_cpu(num_replicas: int) -> None:
  """Splits the CPU into logical devices (before TensorFlow initialises)."""
  if num_replicas > 1 and not tf.config.list_physical_devices('GPU'):
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)


def learning_rate_at(step, cfg: config_lib.TrainConfig):
  """Linear warmup, then cosine decay to 0 or step decay."""
  step = tf.cast(step, tf.float32)
  warmup = tf.minimum(1.0, (step + 1.0) / max(cfg.warmup_steps, 1))
  if cfg.lr_schedule == 'cosine':
    progress = tf.clip_by_value(
        (step - cfg.warmup_steps) / max(cfg.train_steps - cfg.warmup_steps, 1),
        0.0, 1.0)
    decay = 0.5 * (1.0 + tf.cos(math.pi * progress))
  elif cfg.lr_schedule == 'step':
    passed = tf.add_n([tf.cast(step >= b, tf.float32)
                       for b in cfg.lr_decay_steps] or [0.0])
    decay = cfg.lr_decay_rate ** passed
  else:
    raise ValueError(f'unknown lr_schedule {cfg.lr_schedule!r}')
  return cfg.learning_rate * warmup * decay


class Trainer:
  """Builds data, model and optimizer under a strategy; runs and resumes."""

  def __init__(self, configs: config_lib.Configs, model_dir: str,
               strategy: tf.distribute.Strategy | None = None):
    self.configs = configs
    self.model_dir = model_dir
    train_cfg = configs.train
    if train_cfg.mixed_precision:
      tf_keras.mixed_precision.set_global_policy(train_cfg.mixed_precision)
    self.strategy = strategy or make_strategy(train_cfg)
    self.skipped = sources.SkippedImages()
    data_cfg = dataclasses.replace(
        configs.data, annotations=train_cfg.train_annotations,
        images=train_cfg.train_images, tfrecords=train_cfg.train_tfrecords,
        seed=train_cfg.seed)
    self.dataset = self.strategy.distribute_datasets_from_function(
        lambda context: pipeline.build_dataset(
            data_cfg, configs.geometry, train_cfg.batch_size, True, context,
            skipped=self.skipped))
    with self.strategy.scope():
      tf_keras.utils.set_random_seed(train_cfg.seed)
      self.models = masklab.build_masklab(
          configs.model, configs.geometry, configs.data.max_instances)
      optimizer = tf_keras.optimizers.SGD(
          learning_rate=train_cfg.learning_rate,
          momentum=train_cfg.momentum)
      if train_cfg.mixed_precision == 'mixed_float16':
        optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
      self.optimizer = optimizer
      self.optimizer.build(self.models.train_model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              name='global_step')
      self.bad_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.checkpoint = tf.train.Checkpoint(
        model=self.models.train_model, optimizer=self.optimizer,
        step=self.step)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, model_dir, max_to_keep=train_cfg.keep_checkpoints,
        step_counter=self.step,
        checkpoint_interval=train_cfg.checkpoint_every)
    self._train_step = tf.function(self._distributed_step)

  def restore_or_initialise(self) -> str:
    """Resumes from the latest checkpoint, else loads init_checkpoint."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      return f'resumed from {latest} at step {int(self.step)}'
    if self.configs.train.init_checkpoint:
      report = masklab.load_imagenet_checkpoint(
          self.models, self.configs.train.init_checkpoint,
          self.configs.model)
      return (f'initialised from {self.configs.train.init_checkpoint}: '
              f'{len(report["matched"])} variables matched, '
              f'{len(report["unmatched_ours"])} of ours unmatched')
    return 'initialised from scratch'

  def _replica_gradients(self, batch):
    model = self.models.train_model
    train_cfg = self.configs.train
    replicas = self.strategy.num_replicas_in_sync
    with tf.GradientTape() as tape:
      outputs = model(masklab.model_inputs(batch, True), training=True)
      losses = masklab.compute_losses(outputs, batch, self.configs.model)
      kernels = [v for v in model.trainable_variables if 'kernel' in v.name]
      decay = train_cfg.weight_decay * tf.add_n(
          [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])
      total = (losses['total'] + decay) / replicas
      if isinstance(self.optimizer,
                    tf_keras.mixed_precision.LossScaleOptimizer):
        total = self.optimizer.get_scaled_loss(total)
    grads = tape.gradient(total, model.trainable_variables)
    if isinstance(self.optimizer, tf_keras.mixed_precision.LossScaleOptimizer):
      grads = self.optimizer.get_unscaled_gradients(grads)
    finite = tf.math.is_finite(losses['total'])
    for grad in grads:
      if grad is not None:
        finite &= tf.reduce_all(tf.math.is_finite(grad))
    losses['weight_decay'] = decay
    return grads, losses, tf.cast(finite, tf.float32)

  def _apply(self, grads):
    model = self.models.train_model
    clip = self.configs.train.clip_norm
    if clip:
      grads, _ = tf.clip_by_global_norm(grads, clip)
    self.optimizer.apply_gradients(zip(grads, model.trainable_variables))

  def _distributed_step(self, batch):
    strategy = self.strategy
    self.optimizer.learning_rate.assign(
        learning_rate_at(self.step, self.configs.train))
    grads, losses, finite = strategy.run(self._replica_gradients,
                                         args=(batch,))
    all_finite = strategy.reduce(tf.distribute.ReduceOp.SUM, finite,
                                 axis=None) >= strategy.num_replicas_in_sync

    def apply():
      strategy.run(self._apply, args=(grads,))
      self.bad_steps.assign(0)
      return tf.constant(True)

    def skip():
      self.bad_steps.assign_add(1)
      return tf.constant(False)

    applied = tf.cond(all_finite, apply, skip)
    self.step.assign_add(1)
    losses = {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
              for k, v in losses.items()}
    return losses, applied

  def train(self, num_steps: int | None = None,
            after_step=None) -> dict[str, float]:
    """Runs up to train_steps (or num_steps more); returns the last losses.

    `after_step(step, losses)`, if given, runs after every step (e.g.
    evaluation on its own cadence, independent of --log_every).
    """
    train_cfg = self.configs.train
    end = train_cfg.train_steps
    if num_steps is not None:
      end = min(end, int(self.step) + num_steps)
    writer = tf.summary.create_file_writer(os.path.join(self.model_dir,
                                                        'train'))
    iterator = iter(self.dataset)
    start_step, start_time = int(self.step), time.time()
    last = {}
    while int(self.step) < end:
      losses, applied = self._train_step(next(iterator))
      step = int(self.step)
      last = {k: float(v) for k, v in losses.items()}
      if not bool(applied):
        logging.warning('step %d: non-finite loss or gradients, skipped '
                        '(%d in a row)', step, int(self.bad_steps))
        if int(self.bad_steps) >= train_cfg.max_bad_steps:
          self.manager.save(checkpoint_number=self.step, check_interval=False)
          raise TrainingStopped(
              f'{int(self.bad_steps)} non-finite steps in a row at step '
              f'{step}: lower the learning rate or check the data; the last '
              f'good weights are in {self.manager.latest_checkpoint}')
      self.manager.save(checkpoint_number=self.step)
      if step % train_cfg.log_every == 0 or step == end:
        elapsed = time.time() - start_time
        rate = (step - start_step) / max(elapsed, 1e-9)
        eta = (end - step) / max(rate, 1e-9)
        line = (f'step {step}/{end}  loss {last["total"]:.3f}  ' +
                '  '.join(f'{k} {v:.3f}' for k, v in last.items()
                          if k != 'total') +
                f'  lr {float(self.optimizer.learning_rate):.4g}  '
                f'{rate:.2f} steps/s  eta {eta / 60:.1f} min')
        print(line, flush=True)
        with writer.as_default(step=step):
          for key, value in last.items():
            tf.summary.scalar(f'loss/{key}', value)
          tf.summary.scalar('learning_rate',
                            float(self.optimizer.learning_rate))
          tf.summary.scalar('steps_per_second', rate)
      if after_step:
        after_step(step, last)
    self.manager.save(checkpoint_number=self.step, check_interval=False)
    if len(self.skipped):
      logging.warning('%d images could not be read and were skipped:\n%s',
                      len(self.skipped), '\n'.join(self.skipped.messages))
    self._write_config()
    return last

  def _write_config(self):
    with open(os.path.join(self.model_dir, 'configs.json'), 'w') as f:
      json.dump({name: dataclasses.asdict(value) for name, value in
                 self.configs._asdict().items()}, f, indent=1)
