"""The device check: what must hold, and what things cost, on an accelerator
the project never ran on (a GPU). benchmarks/device_check.sh sets up its
environment there and runs it.

One process, bounded by --deadline_s: a lent GPU machine gives minutes, shared
by every try, so one run must leave room for a second.
1. Checks: the model tests that matter on a new device, by pytest in a child
   process (TESTS: the assembling layer's XLA and plain paths against numpy
   and crop_and_resize, values and gradients; RoI crops both ways; the pinned
   losses; the SavedModel on odd batch and image sizes), then two training
   steps under `mirrored` over this process's devices (the one GPU), their
   losses finite.
2. Timings: groups of rows, a group = a kind (inference, training step) x a
   precision x a shape; a group's systems are called round by round, so
   its rows compare at one speed of the device (a GPU's clocks move with
   its temperature and a shared CPU's speed with its neighbours). Groups run
   in order of importance (`plan`): a deadline cuts what matters least, and
   the groups it cut are listed.
3. The peak device memory of each row's call beyond what was allocated
   before it (TensorFlow's allocator; GPUs only).

The result is written after each group, so a run cut short keeps what it
measured: <output_dir>/device_check.json (a harness result: rows as data)
and device_check.md (its tables). --smoke: tiny models, one size, one round,
one test: the whole path in seconds on a CPU (CI runs it:
tests/benchmarks/test_device_check.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

from benchmarks import systems
from benchmarks.harness import render
from benchmarks.harness import results
from benchmarks.harness import suite
from benchmarks.harness import timing
from benchmarks.suites import speed
from masklab_tf import files

FLAGS = flags.FLAGS
# The suite's systems: their names in the adapters (benchmarks/systems/),
# whose precision the check sets.
SYSTEMS = {'masklab_fast': 'masklab_fast_fp32', 'masklab_paper': 'masklab_os8',
           'model_garden': 'model_garden'}
PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')
TESTS = (
    'tests/ops/test_assemble.py',
    'tests/ops/test_roi_crop.py',
    'tests/modeling/systems/test_masklab.py::test_pinned_losses_at_initialisation',
    'tests/serving/test_export.py::test_any_batch_and_image_size',
)
# --smoke: MaskLab alone in float32, tiny models (CPUs emulate float16: a
# tiny model's training step took 36 s), no pytest child and no mirrored
# steps (each costs a process or a model; CI runs the tests themselves);
# tests/benchmarks/test_device_check.py's slow test adds Model Garden,
# mixed_float16 and the mirrored steps.
SMOKE = {
    'systems': ['masklab_fast'], 'precisions': ['float32'],
    'sizes': ['128'], 'batches': ['1'], 'train_batch': 2, 'rounds': 1,
    'num_images': 4, 'tests': [], 'mirrored_check': False,
    # Tiny models of the same code paths.
    'extra_flags': ['--backbone_depth=10', '--num_proposals=20',
                    '--test_num_proposals=20', '--rpn_pre_nms_top_k=200',
                    '--num_sampled_rois=8', '--max_detections=5',
                    '--hypercolumn_channels=8', '--refine_filters=8',
                    '--rpn_head_channels=16', '--anchor_sizes=16,32',
                    '--max_instances=8'],
    'model_overrides': {
        'backbone': {'resnet': {'model_id': 18}},
        'roi_generator': {'num_proposals': 50, 'test_num_proposals': 50},
        'roi_sampler': {'num_sampled_rois': 16},
        'mask_sampler': {'num_sampled_masks': 8},
        'detection_generator': {'max_num_detections': 5}},
}
# Seconds a group is expected to need at least: a group that cannot start
# this long before the deadline is left out.
GROUP_MIN_S = {False: 20.0, True: 1.0}  # by --smoke
COLUMNS = [
    results.column('system', 'system'),
    results.column('precision', 'precision'),
    results.column('xla', 'XLA (assembling)'),
    results.column('kind', 'kind'),
    results.column('size', 'size', 'd', suffix=' px'),
    results.column('batch', 'batch', 'd'),
    results.column('ms_per_image', 'ms/image', '.1f'),
    results.column('s_per_step', 's/step', '.3f'),
    results.column('first_call_s', 'first call s', '.1f'),
    results.column('device_peak_mib', 'device peak MiB', '.0f'),
    results.column('error', 'error')]
CHECK_COLUMNS = [results.column('check', 'check'),
                 results.column('passed', 'passed'),
                 results.column('seconds', 's', '.0f'),
                 results.column('detail', 'detail')]


@dataclasses.dataclass(frozen=True)
class Group:
  """Rows measured together, round by round."""
  kind: str  # 'infer' or 'train'
  precision: str
  size: int
  batch: int
  xla: bool
  systems: tuple[str, ...]

  @property
  def name(self) -> str:
    return (f'{self.kind} {self.precision} {self.size} px b{self.batch}'
            + ('' if self.xla else ' no XLA'))


def define_flags() -> None:
  flags.DEFINE_string('output_dir', None, 'Where the JSON and table go.')
  flags.DEFINE_bool('smoke', False, 'Tiny models, one size, one round: the '
                    'whole path in seconds on a CPU.')
  flags.DEFINE_list('systems', list(SYSTEMS), f'Of: {", ".join(SYSTEMS)}.')
  flags.DEFINE_list('precisions', list(PRECISIONS), 'tf_keras policies.')
  flags.DEFINE_list('sizes', ['512', '800'], 'Image sides (square); the first '
                    'is the training and no-XLA rows\' size.')
  flags.DEFINE_list('batches', ['1', '8'], 'Inference batch sizes.')
  flags.DEFINE_integer('train_batch', 4, 'Training step batch size.')
  flags.DEFINE_integer('rounds', 10, 'Timed calls per row (median).')
  flags.DEFINE_integer('num_images', 16, 'Synthetic training images.')
  flags.DEFINE_list('tests', list(TESTS), 'Pytest node ids of the checks '
                    '(empty: none).')
  flags.DEFINE_bool('mirrored_check', True, 'Check two training steps under '
                    '`mirrored`.')
  flags.DEFINE_float('deadline_s', 480.0, 'The whole run stops starting '
                     'work after this many seconds.')


def plan(settings: dict) -> list[Group]:
  """The groups in order of importance: batch-1 inference at the first size
  in each precision, then the training steps, then the assembling layer
  without XLA (MaskLab only), then the other sizes and batches."""
  precisions, chosen = settings['precisions'], tuple(settings['systems'])
  first = settings['sizes'][0]
  masklab = tuple(s for s in chosen if s != 'model_garden')
  groups = [Group('infer', p, first, 1, True, chosen) for p in precisions]
  groups += [Group('train', p, first, settings['train_batch'], True, chosen)
             for p in precisions]
  if masklab:
    groups += [Group('infer', p, first, 1, False, masklab)
               for p in precisions]
  groups += [Group('infer', p, size, batch, True, chosen)
             for size in settings['sizes'] for batch in settings['batches']
             if (size, batch) != (first, 1) for p in precisions]
  return groups


def run_tests(tests: list[str], timeout_s: float) -> dict:
  """The pytest node ids `tests` in a child process: a check row."""
  start = time.monotonic()
  try:
    done = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
         '-m', '', *tests], cwd=results.REPO, capture_output=True, text=True,
        timeout=timeout_s, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    passed, detail = done.returncode == 0, lines[-1] if lines else ''
    if not passed:
      detail = ' | '.join(line for line in lines if line.startswith(
          ('FAILED', 'ERROR')))[:2000] or detail
  except subprocess.TimeoutExpired:
    passed, detail = False, f'timed out after {timeout_s:.0f} s'
  return {'check': 'tests: ' + ', '.join(tests), 'passed': passed,
          'seconds': time.monotonic() - start, 'detail': detail}


def mirrored_steps(settings: dict, data: str) -> dict:
  """Two training steps of MaskLab's fast config under `mirrored` over this
  process's devices: a check row."""
  from masklab_tf.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  from benchmarks.systems import masklab  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  with tempfile.TemporaryDirectory() as model_dir:
    try:
      cfg = masklab.configs(
          SYSTEMS['masklab_fast'], settings['sizes'][0], (
              f'--train_tfrecords={data}', '--strategy=mirrored',
              f'--batch_size={settings["train_batch"]}', '--train_steps=2',
              '--checkpoint_every=1000', '--image_summary_every=0',
              '--shuffle_buffer=4'), settings)
      trainer = trainer_lib.Trainer(cfg, model_dir)
      trainer.restore_or_initialise()
      losses = trainer.train()
      replicas = trainer.strategy.num_replicas_in_sync
      passed = all(math.isfinite(v) for v in losses.values())
      detail = (f'{replicas} replica(s) on '
                f'{", ".join(trainer.strategy.extended.worker_devices)}; '
                f'total loss {losses.get("total", float("nan")):.3f}')
    except Exception as error:  # pylint: disable=broad-except
      passed, detail = False, _summary(error)
  return {'check': 'mirrored training steps', 'passed': passed,
          'seconds': time.monotonic() - start, 'detail': detail}


def _summary(error: Exception) -> str:
  """One line of an error: a traced function's error holds its cause on the
  last line naming an error type, after a trace of user code."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  causes = [line for line in lines if re.match(r'[A-Za-z.]*Error: ', line)]
  return (causes[-1] if causes else
          f'{type(error).__name__}: {lines[0] if lines else ""}')[:300]


def _device_memory():
  """(reset, read) of the first GPU's allocator: read() is the peak since
  reset() beyond what was allocated at reset(), in MiB; None without a
  GPU."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.config.list_logical_devices('GPU'):
    return lambda: None, lambda: None
  device, base = 'GPU:0', [0]

  def reset():
    tf.config.experimental.reset_memory_stats(device)
    base[0] = tf.config.experimental.get_memory_info(device)['current']

  def read():
    return (tf.config.experimental.get_memory_info(device)['peak']
            - base[0]) / 2**20
  return reset, read


class Measurer:
  """Builds each system once per (kind, precision, XLA) and times groups."""

  def __init__(self, settings: dict, data: str, scratch: str):
    self.settings, self.data, self.scratch = settings, data, scratch
    self._setups = {}
    self.reset_memory, self.read_memory = _device_memory()

  def _setup(self, group: Group, system: str) -> dict:
    key = (group.kind, group.precision, group.xla, system)
    if key not in self._setups:
      import tf_keras  # pylint: disable=g-import-not-at-top
      settings = dict(self.settings, precision=group.precision,
                      use_xla=group.xla)
      adapter = systems.adapter(SYSTEMS[system])
      if group.kind == 'infer':
        setup = adapter.inference(SYSTEMS[system], group.size, settings)
      else:
        setup = adapter.training(SYSTEMS[system], group.size, settings,
                                 self.data, tempfile.mkdtemp(
                                     dir=self.scratch))
      # Model Garden's builder sets the process's policy; MaskLab's builds
      # in a scope of their own.
      tf_keras.mixed_precision.set_global_policy('float32')
      self._setups[key] = setup
    return self._setups[key]

  def _calls(self, group: Group, system: str):
    """(call() -> seconds of one synchronised call, first call's seconds,
    the call's device peak MiB)."""
    setup = self._setup(group, system)
    if group.kind == 'infer':
      args = setup['make_args'](group.batch)
      function = speed.static_function(setup['function'], args)
      # Fetching an output waits for every kernel before it on the device.
      run = lambda: int(setup['count_detections'](function(*args)))  # pylint: disable=unnecessary-lambda-assignment
    else:
      iterator = iter(setup['dataset'])
      batches = [next(iterator) for _ in range(2)]
      del iterator
      step, losses = setup['step'], []
      run = lambda: losses.append(float(step(batches[len(losses) % 2])))  # pylint: disable=unnecessary-lambda-assignment
    first = timing.seconds(run, ())
    self.reset_memory()
    run()
    peak = self.read_memory()
    if group.kind == 'train' and not all(map(math.isfinite, losses)):
      raise FloatingPointError(f'training losses {losses}')
    return (lambda: timing.seconds(run, ())), first, peak

  def measure(self, group: Group) -> list[dict]:
    """The group's rows; a system that fails gets a row with its error."""
    calls, rows = {}, {}
    for system in group.systems:
      row = {'system': system, 'precision': group.precision,
             'xla': 'on' if group.xla else 'off', 'kind': group.kind,
             'size': group.size, 'batch': group.batch}
      try:
        calls[system], row['first_call_s'], row['device_peak_mib'] = (
            self._calls(group, system))
      except Exception as error:  # pylint: disable=broad-except
        row['error'] = _summary(error)
      rows[system] = {k: v for k, v in row.items() if v is not None}
    samples = {system: [] for system in calls}
    for _ in range(self.settings['rounds']):
      for system, call in calls.items():
        samples[system].append(call())
    for system, seconds in samples.items():
      median = statistics.median(seconds)
      if group.kind == 'infer':
        rows[system]['ms_per_image'] = 1e3 * median / group.batch
      else:
        rows[system]['s_per_step'] = median
    return list(rows.values())


def fast_over_model_garden(rows: list[dict]) -> dict[str, float]:
  """{'<precision> <size> px b<batch>': masklab_fast's ms/image over
  model_garden's} for the inference groups (XLA on) that timed both."""
  times = {}
  for row in rows:
    if row['kind'] == 'infer' and row['xla'] == 'on' and 'ms_per_image' in row:
      group = f"{row['precision']} {row['size']} px b{row['batch']}"
      times.setdefault(group, {})[row['system']] = row['ms_per_image']
  return {group: t['masklab_fast'] / t['model_garden']
          for group, t in times.items()
          if {'masklab_fast', 'model_garden'} <= set(t)}


def report(settings: dict, checks: list[dict], rows: list[dict],
           left_out: list[str], device: str) -> dict:
  body = [results.text(
      f'Device: {device}. Each group of rows (a kind, a precision, a shape) '
      f'called round by round, median of {settings["rounds"]} calls; '
      'device peak: the allocator\'s peak during one call beyond what was '
      'allocated before it.'),
          results.table('checks', CHECK_COLUMNS, checks),
          results.table('timings', COLUMNS, rows)]
  ratios = fast_over_model_garden(rows)
  if ratios:
    body.append(results.text(
        "MaskLab fast's inference time over Model Garden's (target: at most "
        '0.8): ' + '; '.join(f'{group} {ratio:.2f}'
                             for group, ratio in ratios.items()) + '.'))
  if left_out:
    body.append(results.text('Left out at the deadline: '
                             + '; '.join(left_out) + '.'))
  result = results.new('device_check', 'Device check', body, settings)
  result['device'] = device
  return result


def _device() -> str:
  from masklab_tf import host  # pylint: disable=g-import-not-at-top
  gpus = host.current().gpus
  return (', '.join(f'{g.name} (compute capability '
                    f'{".".join(map(str, g.compute_capability or ()))})'
                    for g in gpus) or 'no GPU: the CPU')


def main(argv) -> None:
  del argv
  if not FLAGS.output_dir:
    raise app.UsageError('--output_dir is required')
  unknown = (set(FLAGS.systems) - set(SYSTEMS)) | (
      set(FLAGS.precisions) - set(PRECISIONS))
  if unknown:
    raise app.UsageError(f'unknown systems or precisions: {sorted(unknown)}')
  start = time.monotonic()
  deadline = start + FLAGS.deadline_s
  def chosen(name):
    return suite.chosen(name, SMOKE, FLAGS.smoke)

  settings = {name: chosen(name) for name in (
      'systems', 'precisions', 'train_batch', 'rounds', 'num_images',
      'tests', 'mirrored_check')}
  settings.update(
      sizes=[int(s) for s in chosen('sizes')],
      batches=[int(b) for b in chosen('batches')], smoke=FLAGS.smoke,
      extra_flags=SMOKE['extra_flags'] if FLAGS.smoke else [],
      model_overrides=SMOKE['model_overrides'] if FLAGS.smoke else None,
      model_garden_score_threshold=0.0)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  checks, rows, left_out = [], [], []
  device = _device()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  print(f'TensorFlow {tf.__version__}, built with CUDA: '
        f'{tf.test.is_built_with_cuda()}; device: {device}', flush=True)

  def save():
    result = report(settings, checks, rows, left_out, device)
    files.write_json(os.path.join(FLAGS.output_dir, 'device_check.json'),
                     result, indent=1)
    with open(os.path.join(FLAGS.output_dir, 'device_check.md'), 'w') as f:
      f.write('\n'.join(render.result_lines(result)) + '\n')
    return result

  if settings['tests']:
    checks.append(run_tests(settings['tests'],
                            max(deadline - time.monotonic(), 1.0)))
    save()
  with tempfile.TemporaryDirectory(prefix='device_check_') as scratch:
    data = os.path.join(speed.data_dir(scratch, settings['sizes'][0],
                                       settings), 'records', 'train-*')
    speed.make_data(scratch, settings['sizes'][0], settings)
    if settings['mirrored_check']:
      checks.append(mirrored_steps(settings, data))
      save()
    measurer = Measurer(settings, data, scratch)
    for group in plan(settings):
      if time.monotonic() + GROUP_MIN_S[FLAGS.smoke] > deadline:
        left_out.append(group.name)
        continue
      rows += measurer.measure(group)
      print(f'{group.name}: ' + ', '.join(
          f"{r['system']} " + (r.get('error') or (
              f"{r['ms_per_image']:.1f} ms/image" if 'ms_per_image' in r
              else f"{r['s_per_step']:.3f} s/step")) for r in rows[-len(
                  group.systems):]), flush=True)
      save()
  result = save()
  suite.publish(result)
  failed = [c['check'] for c in checks if not c['passed']] + [
      f"{r['system']} {r['kind']} {r['precision']}" for r in rows
      if 'error' in r]
  if failed:
    print(f'\nfailed: {"; ".join(failed)}')
    sys.exit(1)
