"""The compute precision a model is built in, with 'auto' for "where it pays".

TrainConfig.mixed_precision names a tf_keras policy: '' (float32),
'mixed_bfloat16' or 'mixed_float16'. 'auto' picks a mixed policy where the
device has the units for it and float32 elsewhere:
- TPUs (a TPUStrategy): mixed_bfloat16, their native type.
- GPUs: mixed_bfloat16 where every GPU has bfloat16 tensor cores (Ampere and
  later: no loss scaling needed, float32's range), else mixed_float16 where
  every one has float16 tensor cores (Volta, Turing; the trainer then
  scales the loss), else float32.
- CPUs: mixed_bfloat16 on TensorFlow's oneDNN path on AVX512_BF16 or AMX,
  where bfloat16 convolutions ran several times faster than float32.
  Without those units TensorFlow converts bfloat16 to float32 inside
  Eigen's kernels, and bfloat16 ran slower than float32, training by far,
  for 8 bits of mantissa and nothing in return (docs/perf-notes.md#bfloat16).
The facts come from masklab_tf.host.
"""

from __future__ import annotations

import tensorflow as tf

from masklab_tf import host as host_lib

AUTO = 'auto'
POLICIES = ('', 'mixed_bfloat16', 'mixed_float16', AUTO)


def native_bfloat16(machine: host_lib.Host | None = None) -> bool:
  """Whether a host's models compute bfloat16 natively: every GPU is
  Ampere or later, or, without GPUs, oneDNN runs on a CPU with bfloat16
  dot products (TensorFlow turns oneDNN off by default on other CPUs).

  Args:
    machine: the host; None: this one (host_lib.current()).
  """
  machine = host_lib.current() if machine is None else machine
  if machine.gpus:
    return machine.gpus_bfloat16
  return machine.onednn and machine.cpu_bfloat16


def auto_policy(machine: host_lib.Host | None = None,
                strategy: tf.distribute.Strategy | None = None) -> str:
  """The policy 'auto' stands for (see the module docstring).

  Args:
    machine: the host; None: this one (host_lib.current()).
    strategy: the distribution strategy the model is built under, if any.
  """
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return 'mixed_bfloat16'
  machine = host_lib.current() if machine is None else machine
  if native_bfloat16(machine):
    return 'mixed_bfloat16'
  return 'mixed_float16' if machine.gpus_float16 else ''


def resolve(policy: str, strategy: tf.distribute.Strategy | None = None,
            machine: host_lib.Host | None = None) -> str:
  """The tf_keras policy to build with: `policy` itself, or for 'auto'
  `auto_policy(machine, strategy)`.

  Raises:
    ValueError: `policy` is none of POLICIES.
  """
  if policy not in POLICIES:
    raise ValueError(f'mixed_precision={policy!r}: use one of '
                     f'{", ".join(repr(p) for p in POLICIES)}')
  if policy != AUTO:
    return policy
  return auto_policy(machine, strategy)
