"""What the benchmark tables print under themselves: the machine.

The facts come from masklab_tf.host, which the model's host-dependent
choices read too; this module only words them for the tables.
"""

import os
import platform

from masklab_tf import host

# CPU flags that decide which kernels TensorFlow runs, hence the tables'
# speeds: AVX-512 (oneDNN is on by default only with the AVX512_VNNI /
# AVX512_BF16 / AMX generation), bfloat16 dot products, AMX tiles. Two
# "AMD EPYC" machines of this project differed in exactly these
# (Zen 3: AVX2 only, Eigen kernels; Zen 4: AVX-512 and AVX512_BF16, oneDNN).
KERNEL_FLAGS = ('avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_bf16')


def cpu_model(info=None) -> str:
  """The CPU's model name (/proc/cpuinfo, or `info` read from it), else
  platform's guess."""
  info = host.cpuinfo() if info is None else info
  return info.get('model name') or platform.processor() or 'unknown CPU'


def cpu_details(info=None) -> str:
  """'family F model M; <kernel flags present>' ('' where unknown), from
  /proc/cpuinfo or `info` read from it."""
  info = host.cpuinfo() if info is None else info
  if not info:
    return ''
  flags = set(info.get('flags', '').split())
  present = [flag for flag in KERNEL_FLAGS if flag in flags]
  return (f"family {info.get('cpu family', '?')} model "
          f"{info.get('model', '?')}; "
          + (', '.join(present) if present else 'no AVX-512'))


def describe() -> str:
  """'N cores, <CPU model> (family F model M; <kernel flags>)'."""
  info = host.cpuinfo()  # read once for both parts
  details = cpu_details(info)
  return (f'{os.cpu_count()} cores, {cpu_model(info)}'
          + (f' ({details})' if details else ''))
