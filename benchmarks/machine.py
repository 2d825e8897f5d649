"""What the benchmark tables print under themselves: the machine."""

import os
import platform


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else platform's guess."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown CPU'


def describe() -> str:
  """'N cores, <CPU model>'."""
  return f'{os.cpu_count()} cores, {cpu_model()}'
