"""Training loop: tf.data under a tf.distribute strategy, checkpoints, resume.

One custom loop serves every strategy. Each replica's losses are its share
of the global batch's (modeling/losses.py normalises by all-reduced counts),
so the all-reduced (summed) gradients are the global batch's, equal to one
device's on the same batch; weight decay, the same on every replica, is
divided by the number of replicas. A step whose loss or gradients are not
finite on any replica is skipped on all of them (the decision is
all-reduced, then the update runs under a cross-replica tf.cond) and
reported; `max_bad_steps` in a row stop the run with a clear message.

Checkpoints: tf.train.CheckpointManager every `checkpoint_every` steps and at
exit. The manager writes the checkpoint files before it rewrites the
`checkpoint` state file (atomically, by rename), so a kill during a save
leaves "latest" pointing at the previous complete checkpoint; a restart
restores it and continues at its step. A save that fails (a full disk) is
one sentence, model_dir.SaveFailed.

Checkpoints also carry the samplers' random generators and the input
stream's position: with TrainConfig.deterministic (masklab_tf/determinism.py)
a resumed run starts the pipeline there and draws the samples the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import logging
import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf import determinism
from masklab_tf import files
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.modeling import checkpoints
from masklab_tf.modeling import factory
from masklab_tf.modeling import precision as precision_lib
from masklab_tf.modeling.layers import sampler_base
from masklab_tf.modeling.systems import registry
from masklab_tf.training import hooks as hooks_lib
from masklab_tf.training import model_dir as model_dir_lib
from masklab_tf.training import pictures
from masklab_tf.training import schedules
from masklab_tf.training import strategy as strategy_lib
from masklab_tf.training import training_set


class TrainingStopped(RuntimeError):
  """Too many non-finite steps in a row."""


# The run's class names beside configs.json (read by tools/export.py).
CATEGORIES_FILE = 'categories.json'


class Trainer:
  """Builds data, model and optimizer under a strategy; runs and resumes."""

  def __init__(self, configs: config_lib.Configs, model_dir: str,
               strategy: tf.distribute.Strategy | None = None,
               infer_num_classes: bool = False):
    """Args: configs, model_dir: the run; strategy: default: the one
    configs.train names; infer_num_classes: set configs.model.num_classes
    to the training set's number of categories (bin/train without
    --num_classes).

    Raises:
      training_set.DataError: the training set is missing, empty, or has more
        categories than --num_classes.
    """
    self.configs = configs
    self.model_dir = model_dir
    train_cfg = configs.train
    if train_cfg.deterministic:  # Before anything is traced.
      determinism.enable()
    self.strategy = strategy or strategy_lib.make_strategy(train_cfg)
    self.skipped = sources.SkippedImages()
    system = registry.get_system(configs.model, configs.geometry)
    data_cfg = dataclasses.replace(
        configs.data, keep_full_masks=(configs.data.keep_full_masks or
                                       system.needs_full_masks))
    split = configs.data.train
    # The COCO set is read (and validated) once, here: what the reader
    # skipped or repaired is reported now and again at the end of training.
    self.train_set = None
    if not split.tfrecords:
      if not split.annotations:
        raise training_set.DataError(
            'no training data: set --train_annotations and '
            '--train_images, or --train_tfrecords')
      self.train_set = coco.read_coco(
          split.annotations, split.images,
          verify_images=data_cfg.verify_images,
          allow_outside_images=data_cfg.allow_outside_images)
      if self.train_set.problems:
        logging.warning('%s', self.data_report())
    # Checked before anything is built: a class index past num_classes
    # fails only at the first step, an empty set never.
    self.categories, num_instances, description = training_set.facts(
        self.train_set, split)
    if not system.class_agnostic:
      if infer_num_classes:
        configs = configs._replace(model=dataclasses.replace(
            configs.model, num_classes=len(self.categories)))
        self.configs = configs
        logging.info('--num_classes=%d, from %s', len(self.categories),
                     description)
      training_set.check_classes(self.categories, configs.model.num_classes,
                                 description)
    if not num_instances:
      kept = ''
      if self.train_set is not None:
        kept = (f' ({len(self.train_set.records)} images kept, '
                f'{len(self.train_set.problems)} problems skipped or '
                'repaired, listed above)')
      raise training_set.DataError(
          f'{description}: no instance to train on{kept}: '
          'check the set with bin/check_dataset')
    self._data_cfg = data_cfg
    # 'auto' is decided here, where the strategy is known (TPUs: bfloat16).
    self.precision = precision_lib.resolve(train_cfg.mixed_precision,
                                           self.strategy)
    if train_cfg.mixed_precision == precision_lib.AUTO:
      logging.info('mixed_precision=auto: %s on this host',
                   self.precision or 'float32')
    with self.strategy.scope():
      tf_keras.utils.set_random_seed(train_cfg.seed)
      self.models = factory.build_models(
          configs.model, configs.geometry, configs.data.max_instances,
          precision=self.precision, deterministic=train_cfg.deterministic)
      optimizer = tf_keras.optimizers.SGD(
          learning_rate=train_cfg.learning_rate,
          momentum=train_cfg.momentum)
      if self.precision == 'mixed_float16':
        optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
      self.optimizer = optimizer
      self.optimizer.build(self.models.train_model.trainable_variables)
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              name='global_step')
      self.bad_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
      # Where the cosine schedule reaches 0; a hook that ends training (a
      # time budget) may re-estimate it as it goes (a variable, so that
      # never retraces the step).
      self.total_steps = tf.Variable(train_cfg.train_steps, dtype=tf.int64,
                                     trainable=False)
    # Where this process's input pipeline is in its stream of keys: the
    # next position to train on (batch['position'] + 1). Not a distributed
    # variable: each worker's pipeline has its own stream.
    self.data_position = tf.Variable(0, dtype=tf.int64, trainable=False,
                                     name='data_position')
    self.checkpoint = tf.train.Checkpoint(
        model=self.models.train_model, optimizer=self.optimizer,
        step=self.step, data_position=self.data_position,
        generators=sampler_base.generators(self.models.train_model))
    # Under multi-worker strategies every worker takes part in a save; only
    # the chief's lands in model_dir, the others' in a scratch folder.
    self.is_chief = strategy_lib.is_chief(self.strategy)
    save_dir = model_dir
    if not self.is_chief:
      resolver = self.strategy.cluster_resolver
      save_dir = os.path.join(model_dir, '.workers',
                              f'{resolver.task_type}_{resolver.task_id}')
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, save_dir,
        max_to_keep=train_cfg.keep_checkpoints if self.is_chief else 1,
        step_counter=self.step,
        checkpoint_interval=train_cfg.checkpoint_every)
    # autograph=False: the step's branches are tf.cond already, and the
    # layers need no conversion (factory.build_models); converting them
    # anew cost seconds at every trace.
    self._train_step = tf.function(self._distributed_step, autograph=False)
    self.predict = tf.function(
        lambda inputs: self.models.inference_model(inputs, training=False),
        autograph=False)
    self.summary_writer = (tf.summary.create_file_writer(
        os.path.join(model_dir, 'train')) if self.is_chief else
                           tf.summary.create_noop_writer())

  def make_dataset(self) -> tf.distribute.DistributedDataset:
    """The training batches under the strategy; a deterministic run starts
    at the restored data_position, so that a resumed run continues the
    stream (an unseeded one has no position worth keeping)."""
    configs, train_cfg = self.configs, self.configs.train
    split = configs.data.train
    start = (int(self.data_position.numpy()) if train_cfg.deterministic
             else 0)
    return self.strategy.distribute_datasets_from_function(
        lambda context: pipeline.build_dataset(
            self._data_cfg, configs.geometry, train_cfg.batch_size, True,
            context,
            source=pipeline.make_source(
                split, self._data_cfg.verify_images, context, self.skipped,
                dataset=self.train_set),
            output_stride=configs.model.output_stride, seed=train_cfg.seed,
            deterministic=train_cfg.deterministic, start=start))

  @property
  def current_step(self) -> int:
    # .numpy(): distributed variables (MultiWorkerMirrored) refuse int().
    return int(self.step.numpy())

  def restore_or_initialise(self) -> str:
    """Resumes from the latest checkpoint, else loads init_checkpoint
    (modeling/checkpoints.py: an ImageNet ResNet or another bin/train run,
    e.g. the semantic-segmentation stage's); returns what it did, with
    the matched/unmatched report."""
    latest = tf.train.latest_checkpoint(self.model_dir)
    if latest:
      saved = {name for name, _ in tf.train.list_variables(latest)}
      if any(name.startswith('data_position/') for name in saved):
        self.checkpoint.restore(latest).assert_existing_objects_matched()
      else:  # Written before checkpoints carried the random state.
        tf.train.Checkpoint(
            model=self.models.train_model, optimizer=self.optimizer,
            step=self.step).restore(latest).assert_existing_objects_matched()
        logging.warning('%s has no sampler or data position state: the run '
                        'goes on with fresh ones', latest)
      return f'resumed from {latest} at step {self.current_step}'
    if self.configs.train.init_checkpoint:
      report = checkpoints.load_init_checkpoint(
          self.models, self.configs.train.init_checkpoint,
          self.configs.model)
      written = ''
      if self.is_chief:
        written = '\n  (every weight: ' + checkpoints.write_report(
            report, self.model_dir) + ')'
      return (f'initialised from the {checkpoints.summarize(report)}'
              f'{written}')
    return 'initialised from scratch'

  def _replica_gradients(self, batch):
    model = self.models.train_model
    train_cfg = self.configs.train
    replicas = self.strategy.num_replicas_in_sync
    with tf.GradientTape() as tape:
      outputs = model(
          self.models.system.model_inputs(batch, True),
          training=True)
      losses = self.models.system.compute_losses(outputs, batch)
      kernels = [v for v in model.trainable_variables if 'kernel' in v.name]
      decay = train_cfg.weight_decay * tf.add_n(
          [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kernels])
      total = losses['total'] + decay / replicas
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
        schedules.learning_rate_at(self.step, self.configs.train,
                                   self.total_steps))
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
    # Loss terms are per-replica shares (they sum to the global value);
    # weight decay is the same on every replica.
    losses = {k: strategy.reduce(
        tf.distribute.ReduceOp.MEAN if k == 'weight_decay' else
        tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in losses.items()}
    return losses, applied

  def train(self, num_steps: int | None = None,
            hooks: tuple[hooks_lib.Hook, ...] = ()) -> dict[str, float]:
    """Runs up to train_steps (or num_steps more); returns the last losses.

    Args:
      num_steps: at most this many steps from the current one.
      hooks: training/hooks.py hooks, run in order after every step (e.g.
        evaluation on its own cadence, a time budget). With
        image_summary_every set, pictures.PredictionPictures runs after them.
        A hook that `ends_training` lifts the train_steps bound.
    """
    train_cfg = self.configs.train
    hooks = tuple(hooks)
    if train_cfg.image_summary_every:
      hooks += (pictures.PredictionPictures(train_cfg.image_summary_every),)
    end = (2**62 if any(h.ends_training for h in hooks)
           else train_cfg.train_steps)
    if num_steps is not None:
      end = min(end, self.current_step + num_steps)
    if self.is_chief:  # What load_model() needs, from the first step on.
      self._write_config()
    for hook in hooks:
      hook.begin(self)
    iterator = iter(self.make_dataset())
    start_step, start_time = self.current_step, time.time()
    last = {}
    while self.current_step < end:
      batch = next(iterator)
      losses, applied = self._train_step(batch)
      replicas = self.strategy.experimental_local_results(batch)
      self.data_position.assign(1 + max(
          int(tf.reduce_max(b['position'])) for b in replicas))
      step = self.current_step
      last = {k: float(v) for k, v in losses.items()}
      if not bool(applied):
        self._skipped_step(step)
      model_dir_lib.save(self.manager, self.step)
      if step % train_cfg.log_every == 0 or step == end:
        self._log(step, last, (step - start_step) / max(
            time.time() - start_time, 1e-9))
      stop = [hook.after_step(self, step, last, replicas[0])
              for hook in hooks]
      if any(stop):
        break
    model_dir_lib.save(self.manager, self.step, check_interval=False)
    for hook in hooks:
      hook.end(self)
    if len(self.skipped) or (self.train_set and self.train_set.problems):
      logging.warning('%s', self.data_report())
    return last

  def _skipped_step(self, step: int) -> None:
    """Reports a skipped step; stops after max_bad_steps in a row."""
    bad = int(self.bad_steps.numpy())
    logging.warning('step %d: non-finite loss or gradients, skipped '
                    '(%d in a row)', step, bad)
    if bad >= self.configs.train.max_bad_steps:
      model_dir_lib.save(self.manager, self.step, check_interval=False)
      raise TrainingStopped(
          f'{bad} non-finite steps in a row at step {step}: lower the '
          'learning rate or check the data; the last good weights are in '
          f'{self.manager.latest_checkpoint}')

  def _log(self, step: int, losses: dict[str, float], rate: float) -> None:
    """A progress line, and the scalars to TensorBoard."""
    end = int(self.total_steps.numpy())
    eta = (end - step) / max(rate, 1e-9)
    learning_rate = float(self.optimizer.learning_rate.numpy())
    print(f'step {step}/{end}  loss {losses["total"]:.3f}  ' +
          '  '.join(f'{k} {v:.3f}' for k, v in losses.items()
                    if k != 'total') +
          f'  lr {learning_rate:.4g}  {rate:.2f} steps/s  '
          f'eta {eta / 60:.1f} min', flush=True)
    with self.summary_writer.as_default(step=step):
      for key, value in losses.items():
        tf.summary.scalar(f'loss/{key}', value)
      tf.summary.scalar('learning_rate', learning_rate)
      tf.summary.scalar('steps_per_second', rate)

  def data_report(self) -> str:
    """What training skipped (training_set.report)."""
    return training_set.report(self.train_set, self.skipped)

  def _write_config(self):
    """configs.json (what load_model, bin/export and bin/evaluate rebuild
    the model from) and categories.json (the class names, in the layout of
    a TFRecord set's; bin/export puts them into the SavedModel)."""
    os.makedirs(self.model_dir, exist_ok=True)
    config_lib.to_json(self.configs,
                       os.path.join(self.model_dir, config_lib.CONFIGS_FILE))
    files.write_json(os.path.join(self.model_dir, CATEGORIES_FILE),
                     {'categories': self.categories}, indent=1)
