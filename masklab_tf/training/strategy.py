"""The tf.distribute strategy a run trains under, and who writes its files."""

from __future__ import annotations

import tensorflow as tf

from masklab_tf import config as config_lib


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
