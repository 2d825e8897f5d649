"""The compute precision a model is built in, with 'auto' for "where it pays".

TrainConfig.mixed_precision names a tf_keras policy: '' (float32),
'mixed_bfloat16' or 'mixed_float16'. 'auto' picks mixed_bfloat16 where the
device computes bfloat16 natively and float32 elsewhere. On CPUs that is
TensorFlow's oneDNN path on AVX512_BF16 or AMX: there bfloat16 convolutions
ran ~4x faster than float32 (benchmarks/RESULTS.md, a Xeon). Without those
units TensorFlow converts bfloat16 to float32 inside Eigen's kernels: on a
2-core AMD EPYC (AVX2) the fast config's training step took 89.7 s in
bfloat16 against 11.9 in float32, its backbone 576 ms against 470, and
Model Garden's Mask R-CNN inference 6.4 s against 4.4
(benchmarks/results/side_by_side_amd_epyc/table.md).
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import

AUTO = 'auto'
POLICIES = ('', 'mixed_bfloat16', 'mixed_float16', AUTO)
# /proc/cpuinfo flags of CPUs whose bfloat16 dot products oneDNN uses.
CPU_BFLOAT16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16'})
# GPUs with bfloat16 tensor cores (Ampere and later).
GPU_BFLOAT16_CAPABILITY = (8, 0)


def cpu_flags(cpuinfo_path: str = '/proc/cpuinfo') -> frozenset[str]:
  """The CPU's feature flags (empty where /proc/cpuinfo is not there)."""
  try:
    with open(cpuinfo_path) as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def _gpus_have_bfloat16() -> bool:
  gpus = tf.config.list_physical_devices('GPU')
  return bool(gpus) and all(
      tuple(tf.config.experimental.get_device_details(gpu).get(
          'compute_capability', (0, 0))) >= GPU_BFLOAT16_CAPABILITY
      for gpu in gpus)


@functools.lru_cache(maxsize=None)
def native_bfloat16() -> bool:
  """Whether this host's models compute bfloat16 natively: every GPU is
  Ampere or later, or, without GPUs, oneDNN runs on a CPU with bfloat16
  dot products (TensorFlow turns oneDNN off by default on other CPUs)."""
  if tf.config.list_physical_devices('GPU'):
    return _gpus_have_bfloat16()
  return bool(_pywrap_util_port.IsMklEnabled()
              and cpu_flags() & CPU_BFLOAT16_FLAGS)


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
