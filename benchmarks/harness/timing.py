"""The one timing protocol of the suites (and of the torchvision adapter).

Standard library only: benchmarks/systems/torchvision.py runs under another
interpreter, which need not have absl or TensorFlow.
"""

import os
import resource
import statistics
import time

# Batches fetched before the input pipeline's rate is timed (autotuning, the
# file cache, tracing of the map functions).
DATA_WARMUP_BATCHES = 2


def rss_mib(field: str = 'VmHWM') -> float:
  """This process's peak (VmHWM) or current (VmRSS) resident set in MiB,
  from /proc/self/status (nan where it cannot be read)."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(f'{field}:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return float('nan')


def peak_rss_mib() -> float:
  """Peak resident set of this process so far, in MiB (getrusage where
  /proc is not there)."""
  peak = rss_mib()
  if peak == peak:  # not nan
    return peak
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB


def reset_peak_rss() -> bool:
  """Resets this process's peak resident set (Linux), so that VmHWM then
  measures what follows; False where it cannot."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def seconds(function, args):
  """Wall seconds of one call `function(*args)`. A tf.function on CPU (and
  eager PyTorch) returns when its outputs are computed."""
  start = time.perf_counter()
  function(*args)
  return time.perf_counter() - start


def time_calls(function, args, runs):
  """(first call s, median s of `runs` calls): one untimed-for-the-median
  warm-up (tracing, XLA compilation), then the timed calls."""
  first = seconds(function, args)
  return first, statistics.median(seconds(function, args)
                                  for _ in range(runs))


def measure_training(dataset, step, runs, data_batches, image_shape,
                     batch_size):
  """Input pipeline images/s, then s/step on batches fetched beforehand.

  Args:
    dataset: the system's training dataset (an iterable of batches).
    step: batch -> total loss (a tensor); one optimizer step.
    runs: timed steps (median), after one warm-up step.
    data_batches: batches timed for the pipeline rate.
    image_shape: batch -> shape of its image tensor.
    batch_size: images per batch.
  """
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  iterator = iter(dataset)
  for _ in range(DATA_WARMUP_BATCHES):
    next(iterator)
  first_batches_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(data_batches):
    next(iterator)
  data_s = time.perf_counter() - start
  batches = [next(iterator) for _ in range(runs + 1)]
  # The pipeline must not keep working beside the timed steps.
  del iterator
  start = time.perf_counter()
  losses = [float(step(batches[0]))]
  first_step_s = time.perf_counter() - start
  samples = []
  for batch in batches[1:]:
    start = time.perf_counter()
    losses.append(float(step(batch)))
    samples.append(time.perf_counter() - start)
  return {
      's_per_step': statistics.median(samples),
      'first_step_s': first_step_s,
      'data_images_per_s': data_batches * batch_size / data_s,
      'data_first_batches_s': first_batches_s,
      'image_shape': [int(d) for d in image_shape(batches[0])],
      'losses': losses,
      'load': [load_before, os.getloadavg()[0]],
  }
