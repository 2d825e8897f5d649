"""The compute precision a model is built in, with 'auto' for "where it pays".

TrainConfig.mixed_precision names a tf_keras policy: '' (float32),
'mixed_bfloat16' or 'mixed_float16'. 'auto' picks mixed_bfloat16 where the
device computes bfloat16 natively and float32 elsewhere. On CPUs that is
TensorFlow's oneDNN path on AVX512_BF16 or AMX, where bfloat16 convolutions
ran several times faster than float32. Without those units TensorFlow
converts bfloat16 to float32 inside Eigen's kernels, and bfloat16 ran
slower than float32, training by far, for 8 bits of mantissa and nothing
in return (docs/perf-notes.md#bfloat16). The facts come from masklab_tf.host.
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


def resolve(policy: str, strategy: tf.distribute.Strategy | None = None
            ) -> str:
  """The tf_keras policy to build with: `policy` itself, or for 'auto'
  mixed_bfloat16 on TPUs and where `native_bfloat16()`, else '' (float32).

  Raises:
    ValueError: `policy` is none of POLICIES.
  """
  if policy not in POLICIES:
    raise ValueError(f'mixed_precision={policy!r}: use one of '
                     f'{", ".join(repr(p) for p in POLICIES)}')
  if policy != AUTO:
    return policy
  if isinstance(strategy, tf.distribute.TPUStrategy) or native_bfloat16():
    return 'mixed_bfloat16'
  return ''
