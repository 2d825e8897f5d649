"""The host the code runs on: its CPU, TensorFlow's CPU kernels, GPUs, TPUs.

The one place that describes the machine. Choices that depend on which
kernels will run ask it (modeling/precision.py's 'auto' compute precision,
the convolution layers' kernel rewrites in
modeling/layers/kernel_rewrites.py), and so do the benchmarks, which print
the machine under their tables (benchmarks/harness/machine.py). So /proc/cpuinfo
has one parser, TensorFlow's private oneDNN query has one caller, and a
test can describe a host that is not this one (a `Host`) instead of
patching TensorFlow.

TensorFlow is imported only by the functions that ask it (oneDNN, devices):
describing the CPU works without it (the benchmark reports).
"""

from __future__ import annotations

import dataclasses
import functools

from absl import logging

CPUINFO_PATH = '/proc/cpuinfo'
# vendor_id of x86 CPUs in /proc/cpuinfo.
X86_VENDORS = ('GenuineIntel', 'AuthenticAMD')
# /proc/cpuinfo flags of CPUs whose bfloat16 dot products oneDNN uses.
CPU_BFLOAT16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16'})
# GPUs with bfloat16 tensor cores (Ampere and later).
GPU_BFLOAT16_CAPABILITY = (8, 0)
# GPUs with float16 tensor cores (Volta and later).
GPU_FLOAT16_CAPABILITY = (7, 0)


def cpuinfo(path: str = CPUINFO_PATH) -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo ({} where unreadable).

  Args:
    path: the file to read (tests pass a written one).
  """
  fields = {}
  try:
    with open(path) as f:
      for line in f:
        if not line.strip():
          break
        key, _, value = line.partition(':')
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  return fields


def cpu_flags(path: str = CPUINFO_PATH) -> frozenset[str]:
  """The CPU's feature flags (empty where /proc/cpuinfo is not there).

  Args:
    path: the file to read (tests pass a written one).
  """
  return frozenset(cpuinfo(path).get('flags', '').split())


def onednn_enabled() -> bool:
  """Whether TensorFlow runs its CPU ops through oneDNN.

  TensorFlow turns oneDNN on by itself on x86 CPUs of the AVX512_VNNI /
  AVX512_BF16 / AMX generation, off elsewhere, and TF_ENABLE_ONEDNN_OPTS
  overrides it; which kernels run (oneDNN's or TensorFlow's own Eigen
  ones) decides what the rewrites and bfloat16 gain. TensorFlow has no
  public call for it: the private one is asked here and nowhere else.
  """
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError) as e:
    logging.warning('Cannot tell whether TensorFlow runs oneDNN (%s); '
                    'taking it as off.', e)
    return False


@dataclasses.dataclass(frozen=True)
class Gpu:
  """One GPU as TensorFlow reports it.

  Attributes:
    name: the device name ('NVIDIA H100 80GB HBM3'), else TF's device name.
    compute_capability: (major, minor) of an NVIDIA GPU; None where TF
      gives none (other vendors).
  """
  name: str
  compute_capability: tuple[int, int] | None = None

  @property
  def bfloat16(self) -> bool:
    """Whether it has bfloat16 tensor cores (Ampere and later)."""
    return (self.compute_capability is not None
            and tuple(self.compute_capability) >= GPU_BFLOAT16_CAPABILITY)

  @property
  def float16(self) -> bool:
    """Whether it has float16 tensor cores (Volta and later)."""
    return (self.compute_capability is not None
            and tuple(self.compute_capability) >= GPU_FLOAT16_CAPABILITY)


def gpus() -> tuple[Gpu, ...]:
  """The GPUs TensorFlow sees (physical devices: does not start TF's
  runtime, so logical devices can still be configured afterwards)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = []
  for device in tf.config.list_physical_devices('GPU'):
    details = tf.config.experimental.get_device_details(device)
    capability = details.get('compute_capability')
    found.append(Gpu(details.get('device_name', device.name),
                     tuple(capability) if capability else None))
  return tuple(found)


def tpu_present() -> bool:
  """Whether TensorFlow sees a TPU on this host (physical devices: a TPU
  reached through a TPUStrategy over the network shows in the strategy,
  not here)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return bool(tf.config.list_physical_devices('TPU'))


def _int(value: str | None) -> int | None:
  try:
    return int(value)
  except (TypeError, ValueError):
    return None


@dataclasses.dataclass(frozen=True)
class Host:
  """What the code that adapts to a machine knows of it.

  The defaults describe a CPU nothing is known about, no oneDNN and no
  accelerators; tests build the host they need from them.

  Attributes:
    cpu_vendor: /proc/cpuinfo's vendor_id ('GenuineIntel', 'AuthenticAMD';
      '' where unknown, e.g. not Linux, or ARM).
    cpu_family: its 'cpu family' (AMD Zen 3 and Zen 4: 25).
    cpu_model: its 'model' number (Zen 4 EPYC: 17).
    cpu_model_name: its 'model name'.
    cpu_flags: its feature flags ('avx512f', 'avx512_bf16', 'amx_bf16').
    onednn: whether TensorFlow runs its CPU ops through oneDNN.
    gpus: the GPUs TensorFlow sees.
    tpu: whether TensorFlow sees a TPU on this host.
  """
  cpu_vendor: str = ''
  cpu_family: int | None = None
  cpu_model: int | None = None
  cpu_model_name: str = ''
  cpu_flags: frozenset[str] = frozenset()
  onednn: bool = False
  gpus: tuple[Gpu, ...] = ()
  tpu: bool = False

  @property
  def x86(self) -> bool:
    """An Intel or AMD x86 CPU."""
    return self.cpu_vendor in X86_VENDORS

  @property
  def accelerators(self) -> bool:
    """A GPU or a TPU: the model's convolutions run there, not on the CPU."""
    return bool(self.gpus) or self.tpu

  @property
  def cpu_bfloat16(self) -> bool:
    """The CPU has bfloat16 dot products (AVX512_BF16 or AMX)."""
    return bool(self.cpu_flags & CPU_BFLOAT16_FLAGS)

  @property
  def gpus_bfloat16(self) -> bool:
    """There are GPUs and every one has bfloat16 tensor cores."""
    return bool(self.gpus) and all(gpu.bfloat16 for gpu in self.gpus)

  @property
  def gpus_float16(self) -> bool:
    """There are GPUs and every one has float16 tensor cores."""
    return bool(self.gpus) and all(gpu.float16 for gpu in self.gpus)


def from_cpuinfo(info: dict[str, str], **devices) -> Host:
  """The Host of /proc/cpuinfo's fields `info`.

  Args:
    info: a processor's fields, as `cpuinfo` returns them.
    **devices: the other fields of `Host` (onednn, gpus, tpu).
  """
  return Host(cpu_vendor=info.get('vendor_id', ''),
              cpu_family=_int(info.get('cpu family')),
              cpu_model=_int(info.get('model')),
              cpu_model_name=info.get('model name', ''),
              cpu_flags=frozenset(info.get('flags', '').split()),
              **devices)


@functools.lru_cache(maxsize=None)
def current() -> Host:
  """This host, read once per process (its devices do not change)."""
  return from_cpuinfo(cpuinfo(), onednn=onednn_enabled(), gpus=gpus(),
                      tpu=tpu_present())
