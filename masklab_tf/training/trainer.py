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
restores it and continues at its step.
"""

from __future__ import annotations

import dataclasses
import os
import time

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf import visualize
from masklab_tf.data import coco
from masklab_tf.data import pipeline
from masklab_tf.data import sources
from masklab_tf.modeling import checkpoints
from masklab_tf.modeling import factory
from masklab_tf.modeling import precision as precision_lib
from masklab_tf.modeling.systems import registry
from masklab_tf.postprocess import image_results
from masklab_tf.postprocess import masks as masks_lib
from masklab_tf.training import schedules


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


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes checkpoints, summaries and configs: the
  chief, or worker 0 of a cluster without one, or a single process."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == 'chief':
    return True
  return (resolver.task_type == 'worker' and resolver.task_id == 0 and
          'chief' not in resolver.cluster_spec().as_dict())


# The schedule lives in training/schedules.py; callers name it here too.
learning_rate_at = schedules.learning_rate_at


class TimeBudget:
  """Training time allowed, in wall-clock or process CPU seconds.

  Benchmarks compare systems at equal time, not equal steps. The clock
  starts at the first step (tracing counts) and covers training only. CPU
  mode counts all threads of this process (`time.process_time`), so other
  jobs on the machine do not change what a run gets.
  """

  def __init__(self, seconds: float, mode: str = 'wall',
               skip_steps: int = 10):
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


class Trainer:
  """Builds data, model and optimizer under a strategy; runs and resumes."""

  def __init__(self, configs: config_lib.Configs, model_dir: str,
               strategy: tf.distribute.Strategy | None = None):
    self.configs = configs
    self.model_dir = model_dir
    train_cfg = configs.train
    self.strategy = strategy or make_strategy(train_cfg)
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
        raise ValueError('no training data: set --train_annotations and '
                         '--train_images, or --train_tfrecords')
      self.train_set = coco.read_coco(split.annotations, split.images,
                                      verify_images=data_cfg.verify_images)
      if self.train_set.problems:
        logging.warning('%s', self.data_report())
    self.dataset = self.strategy.distribute_datasets_from_function(
        lambda context: pipeline.build_dataset(
            data_cfg, configs.geometry, train_cfg.batch_size, True, context,
            source=pipeline.make_source(
                split, data_cfg.verify_images, context, self.skipped,
                dataset=self.train_set),
            output_stride=configs.model.output_stride, seed=train_cfg.seed))
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
          precision=self.precision)
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
      # Where the cosine schedule reaches 0; a TimeBudget re-estimates it
      # as it goes (a variable, so that never retraces the step).
      self.total_steps = tf.Variable(train_cfg.train_steps, dtype=tf.int64,
                                     trainable=False)
    self.checkpoint = tf.train.Checkpoint(
        model=self.models.train_model, optimizer=self.optimizer,
        step=self.step)
    # Under multi-worker strategies every worker takes part in a save; only
    # the chief's lands in model_dir, the others' in a scratch folder.
    self.is_chief = is_chief(self.strategy)
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
    self._predict = tf.function(
        lambda inputs: self.models.inference_model(inputs, training=False),
        autograph=False)

  @property
  def current_step(self) -> int:
    # .numpy(): distributed variables (MultiWorkerMirrored) refuse int().
    return int(self.step.numpy())

  def restore_or_initialise(self) -> str:
    """Resumes from the latest checkpoint, else loads init_checkpoint."""
    latest = tf.train.latest_checkpoint(self.model_dir)
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      return f'resumed from {latest} at step {self.current_step}'
    if self.configs.train.init_checkpoint:
      report = checkpoints.load_imagenet_checkpoint(
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
        learning_rate_at(self.step, self.configs.train, self.total_steps))
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

  def train(self, num_steps: int | None = None, after_step=None,
            budget: TimeBudget | None = None) -> dict[str, float]:
    """Runs up to train_steps (or num_steps more); returns the last losses.

    `after_step(step, losses)`, if given, runs after every step (e.g.
    evaluation on its own cadence, independent of --log_every). With a
    `budget`, training runs until the budget is spent instead, and the
    cosine schedule ends at the step count the budget is estimated to allow
    (re-estimated every 50 steps).
    """
    train_cfg = self.configs.train
    end = train_cfg.train_steps if budget is None else 2**62
    if num_steps is not None:
      end = min(end, self.current_step + num_steps)
    if self.is_chief:  # What load_model() needs, from the first step on.
      self._write_config()
    if budget is not None:
      budget.start()
    writer = (tf.summary.create_file_writer(
        os.path.join(self.model_dir, 'train')) if self.is_chief else
              tf.summary.create_noop_writer())
    iterator = iter(self.dataset)
    start_step, start_time = self.current_step, time.time()
    last = {}
    picture_batch = None  # First images seen, drawn with the predictions.
    while self.current_step < end:
      batch = next(iterator)
      if picture_batch is None:
        picture_batch = self.strategy.experimental_local_results(batch)[0]
      losses, applied = self._train_step(batch)
      step = self.current_step
      last = {k: float(v) for k, v in losses.items()}
      if not bool(applied):
        logging.warning('step %d: non-finite loss or gradients, skipped '
                        '(%d in a row)', step, int(self.bad_steps.numpy()))
        if int(self.bad_steps.numpy()) >= train_cfg.max_bad_steps:
          self.manager.save(checkpoint_number=self.step, check_interval=False)
          raise TrainingStopped(
              f'{int(self.bad_steps.numpy())} non-finite steps in a row at step '
              f'{step}: lower the learning rate or check the data; the last '
              f'good weights are in {self.manager.latest_checkpoint}')
      self.manager.save(checkpoint_number=self.step)
      if step % train_cfg.log_every == 0 or step == end:
        elapsed = time.time() - start_time
        rate = (step - start_step) / max(elapsed, 1e-9)
        shown_end = end if budget is None else int(self.total_steps.numpy())
        eta = (shown_end - step) / max(rate, 1e-9)
        line = (f'step {step}/{shown_end}  loss {last["total"]:.3f}  ' +
                '  '.join(f'{k} {v:.3f}' for k, v in last.items()
                          if k != 'total') +
                f'  lr {float(self.optimizer.learning_rate.numpy()):.4g}  '
                f'{rate:.2f} steps/s  eta {eta / 60:.1f} min')
        print(line, flush=True)
        with writer.as_default(step=step):
          for key, value in last.items():
            tf.summary.scalar(f'loss/{key}', value)
          tf.summary.scalar('learning_rate',
                            float(self.optimizer.learning_rate.numpy()))
          tf.summary.scalar('steps_per_second', rate)
      every = train_cfg.image_summary_every
      if every and step % every == 0 and self.is_chief:
        with writer.as_default(step=step):
          tf.summary.image('predictions',
                           self.prediction_pictures(picture_batch),
                           max_outputs=4)
      if after_step:
        after_step(step, last)
      if budget is not None:
        if budget.spent():
          break
        if step % 50 == 0 or step == budget.skip_steps:
          total = budget.estimate_total_steps(step)
          if total is not None:
            self.total_steps.assign(total)
    self.manager.save(checkpoint_number=self.step, check_interval=False)
    if len(self.skipped) or (self.train_set and self.train_set.problems):
      logging.warning('%s', self.data_report())
    return last

  def data_report(self) -> str:
    """What training skipped: entries the reader dropped or repaired (by
    kind, then each), and images that failed to decode while training."""
    lines = []
    if self.train_set is not None and self.train_set.problems:
      kinds = ', '.join(f'{kind} {count}' for kind, count in
                        self.train_set.problem_counts().items())
      lines.append(f'{len(self.train_set.problems)} problems in the training '
                   f'set, skipped or repaired when read ({kinds}):')
      lines += [f'  {problem}' for problem in self.train_set.problems]
    if len(self.skipped):
      lines.append(f'{len(self.skipped)} images failed to decode during '
                   'training and were skipped:')
      lines += [f'  {message}' for message in self.skipped.messages]
    return '\n'.join(lines)

  def prediction_pictures(self, batch: dict, max_images: int = 2
                          ) -> np.ndarray:
    """uint8 [N, H, 2W + 2, 3]: the model's current masks and boxes on the
    batch's first images, beside its semantic map (TensorBoard images)."""
    images = batch['image'][:max_images]
    outputs = self._predict({'image': images,
                             'image_size': batch['image_size'][:max_images]})
    outputs = {k: v.numpy() for k, v in outputs.items()}
    pictures = []
    for i, image in enumerate(images.numpy()):
      num = int(outputs['num_detections'][i])
      boxes = outputs['detection_boxes'][i, :num]
      masks = masks_lib.paste_masks(outputs['detection_masks'][i, :num],
                                    boxes, image.shape[0], image.shape[1])
      pictures.append(visualize.prediction_panel(
          image, boxes, masks.numpy() >= image_results.MASK_THRESHOLD,
          outputs['semantic_map'][i] if 'semantic_map' in outputs else None,
          self.configs.model.num_classes))
    return np.stack(pictures)

  def _write_config(self):
    os.makedirs(self.model_dir, exist_ok=True)
    config_lib.to_json(self.configs,
                       os.path.join(self.model_dir, config_lib.CONFIGS_FILE))
