"""Speed, memory and FLOPs of MaskLab against Model Garden's and
torchvision's Mask R-CNN (benchmarks/systems/), size by size, on one machine.

For each size (square images: no resizing), after that size's own peak:
  infer: ms/image at batch 1 and 4 (a warm-up call, then the median of
    --runs), the process's peak RSS after each, FLOPs of the batch-1 graph
    and of the backbone alone, timed alone and round by round against the
    peak kernels of its precision;
  pair: the paper's config and Model Garden, calls interleaved in one
    process (rows measured minutes apart differ by more than the models);
  data, train: s/step at batch 2 on batches fetched beforehand from each
    system's own input pipeline on synthetic shapes TFRecords, the pipeline
    alone timed apart.
peak: the best GFLOP/s of a big matmul and two 3x3 convolutions (one map; a
batch of small maps wide in channels, the per-box conv5's shape), float32
and bfloat16, measured again before each size: a shared machine's speed
drifts by 2x between hours, so each row is read against its size's peak.

Why one file of ~490 lines: the jobs write the keys the report reads; apart,
a key renamed on one side would empty a table without an error.
"""

from __future__ import annotations

import os
import shutil
import statistics

from absl import app
from absl import flags

from benchmarks import systems
from benchmarks.harness import jobs as jobs_lib
from benchmarks.harness import results
from benchmarks.harness import scratch
from benchmarks.harness import suite
from benchmarks.harness import timing

FLAGS = flags.FLAGS
QUICK = {'sizes': ['128'], 'runs': 1, 'num_images': 4, 'data_batches': 2,
         'peak_repeats': 2}
PAIRS = (('masklab_os8', 'model_garden'),)
PAIR_ROUNDS, BACKBONE_ROUNDS = 10, 5
KERNELS = ('matmul', 'conv', 'conv_batched')
# (matmul side, (conv side, channels), (batch, side, channels)); --quick's.
PEAK_SHAPES = {False: (4096, (128, 256), (64, 16, 512)),
               True: (1024, (32, 64), (4, 8, 64))}


def define_flags():
  flags.DEFINE_list('sizes', ['256', '512', '800'], 'Image sides (square).')
  flags.DEFINE_list('systems', list(systems.DEFAULT),
                    f'Any of {", ".join(systems.NAMES)}.')
  flags.DEFINE_integer('runs', 3, 'Timed calls and steps (median).')
  flags.DEFINE_integer('num_images', 16, 'Synthetic images per size.')
  flags.DEFINE_integer('data_batches', 20, 'Batches timed for tf.data.')
  flags.DEFINE_integer('peak_repeats', 5, 'Timed calls per peak kernel.')
  flags.DEFINE_float('model_garden_score_threshold', 0.0,
                     "Model Garden's pre-NMS score threshold (its 0.05 "
                     'keeps no box of a random 81-class model; MaskLab: 0).')
  flags.DEFINE_string('torchvision_python', '',
                      'Python with torch, torchvision and pycocotools (the '
                      'torchvision systems).')


def plan(sizes, chosen_systems) -> list[jobs_lib.Job]:
  """Size by size, each after its own peak: an interrupted run already
  holds comparable rows."""
  jobs = []
  for size in sizes:
    jobs.append(jobs_lib.Job('peak', size=size))
    jobs += [jobs_lib.Job('infer', s, size) for s in chosen_systems]
    jobs += [jobs_lib.Job('pair', '+'.join(pair), size) for pair in PAIRS
             if set(pair) <= set(chosen_systems)]
    jobs.append(jobs_lib.Job('data', size=size))
    jobs += [jobs_lib.Job('train', s, size) for s in chosen_systems]
  return jobs


def main(argv):
  del argv
  unknown = set(FLAGS.systems) - set(systems.NAMES)
  if unknown:
    raise app.UsageError(f'unknown systems {sorted(unknown)}')
  if set(FLAGS.systems) & set(systems.TORCHVISION) and not (
      FLAGS.torchvision_python):
    raise app.UsageError('torchvision needs --torchvision_python')
  settings = {name: suite.chosen(name, QUICK) for name in (
      'runs', 'num_images', 'data_batches', 'peak_repeats')}
  settings.update(quick=FLAGS.quick, model_garden_score_threshold=(
      FLAGS.model_garden_score_threshold))
  sizes = [int(size) for size in suite.chosen('sizes', QUICK)]

  def command(job, work_dir):
    if job.system not in systems.TORCHVISION:
      return None
    return [FLAGS.torchvision_python, '-m', 'benchmarks.systems.torchvision',
            f'--job={job.kind}', f'--size={job.size}',
            f"--runs={settings['runs']}",
            f'--data_dir={data_dir(work_dir, job.size, settings)}',
            f"--data_batches={settings['data_batches']}",
            *systems.TORCHVISION[job.system]]

  suite.run('speed', plan(sizes, FLAGS.systems), settings,
            lambda store, settings, _: report(store, settings), summary,
            command)


def summary(job, result) -> str:
  """A job's progress line."""
  if job.kind == 'peak':
    return (f"best kernel float32 {peak_gflops(result, ''):.0f}, bfloat16 "
            f"{peak_gflops(result, '_bf16'):.0f} GFLOP/s")
  if job.kind == 'infer':
    return (f"{result['ms_per_image_b1']:.0f} ms/image b1, "
            f"{result['ms_per_image_b4']:.0f} b4, "
            f"{result['flops']['gflops']:.1f} GFLOPs")
  if job.kind == 'train':
    return (f"{result['s_per_step']:.2f} s/step, tf.data "
            f"{result['data_images_per_s']:.1f} images/s")
  if job.kind == 'pair':
    return ', '.join(f'{s} {ms:.0f} ms' for s, ms in result['ms_b1'].items())
  return ''


# ----------------------------------------------------------- the jobs


def run_job(job, settings, work_dir) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  if job.kind == 'peak':
    result = _peak(settings)
  elif job.kind == 'data':
    result = make_data(work_dir, job.size, settings)
  elif job.kind == 'pair':
    result = _pair(job.system.split('+'), job.size, settings)
  elif job.kind == 'infer':
    result = _inference(job.system, job.size, settings)
  else:
    folder = scratch.fresh_folder(work_dir, 'model_')  # the trainer's
    try:
      setup = systems.adapter(job.system).training(
          job.system, job.size, settings,
          os.path.join(data_dir(work_dir, job.size, settings), 'records',
                       'train-*'), folder)
      result = timing.measure_training(
          setup['dataset'], setup['step'], settings['runs'],
          settings['data_batches'], setup['image_shape'],
          systems.TRAIN_BATCH)
    finally:
      shutil.rmtree(folder, ignore_errors=True)
    result['info'] = setup['info']
  result['rss_mib'] = timing.peak_rss_mib()
  return result


def data_dir(work_dir, size, settings):
  return os.path.join(work_dir, 'data',
                      f"{size}px_{settings['num_images']}images")


def make_data(work_dir, size, settings):
  """Synthetic shapes images at `size` px and their TFRecords."""
  # pylint: disable=g-import-not-at-top
  from masklab_tf.data import coco
  from masklab_tf.data import synthetic
  from masklab_tf.data import tfrecord
  root = data_dir(work_dir, size, settings)
  synthetic.make_shapes(root, num_train=settings['num_images'], num_val=0,
                        image_size=size)
  dataset = coco.read_coco(os.path.join(root, 'train', 'annotations.json'),
                           os.path.join(root, 'train', 'images'))
  tfrecord.write_tfrecords(dataset, os.path.join(root, 'records', 'train'),
                           num_shards=2)
  return {'images': len(dataset.records)}


def static_function(function, args):
  """`function` as a tf.function traced once, at the shapes of `args`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = lambda t: tf.TensorSpec(t.shape, t.dtype)
  return tf.function(function, input_signature=[
      tf.nest.map_structure(spec, arg) for arg in args])


def _inference(system, size, settings):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  setup = systems.adapter(system).inference(system, size, settings)
  result = {'load': [os.getloadavg()[0]], 'info': setup['info'],
            'tf_version': tf.__version__}
  for batch in (1, 4):
    args = setup['make_args'](batch)
    function = static_function(setup['function'], args)
    first, median = timing.time_calls(function, args, settings['runs'])
    # VmHWM only grows: read now, it is this batch size's peak.
    result.update({f'ms_per_image_b{batch}': 1e3 * median / batch,
                   f'first_call_s_b{batch}': first,
                   f'rss_mib_b{batch}': timing.peak_rss_mib()})
    if batch == 1:
      result['detections_b1'] = int(setup['count_detections'](
          function(*args)))
      result['flops'] = systems.flops(function)
      backbone_args = setup['backbone_args'](args)
  backbone = static_function(setup['backbone'], backbone_args)
  result['backbone_ms_b1'] = 1e3 * timing.time_calls(
      backbone, backbone_args, settings['runs'])[1]
  result['backbone_flops'] = systems.flops(backbone)
  # Round by round against the peak kernels: the peak job ran minutes
  # away and the machine's speed moves by tens of percent in minutes.
  gflops, kernels = result['backbone_flops']['gflops'], _kernels(
      settings, (_suffix(setup['info']['precision']),))
  for kernel, kernel_args, _ in kernels.values():
    kernel(*kernel_args)
  rates = [(gflops / timing.seconds(backbone, backbone_args),
            max(flop / 1e9 / timing.seconds(kernel, kernel_args)
                for kernel, kernel_args, flop in kernels.values()))
           for _ in range(1 if settings['quick'] else BACKBONE_ROUNDS)]
  result['backbone_vs_peak'] = {
      'backbone_gflops_per_s': [b for b, _ in rates],
      'peak_gflops_per_s': [p for _, p in rates],
      'percent_of_peak': [100 * b / p for b, p in rates]}
  result['load'].append(os.getloadavg()[0])
  return result


def _pair(pair, size, settings):
  """Batch-1 calls of `pair` interleaved: each round compares them at one
  speed of the machine."""
  functions, args = {}, {}
  for system in pair:
    setup = systems.adapter(system).inference(system, size, settings)
    args[system] = setup['make_args'](1)
    functions[system] = static_function(setup['function'], args[system])
    functions[system](*args[system])  # tracing, XLA compilation
  samples = {system: [] for system in pair}
  for _ in range(1 if settings['quick'] else PAIR_ROUNDS):
    for system in pair:
      samples[system].append(1e3 * timing.seconds(functions[system],
                                                  args[system]))
  return {'systems': list(pair), 'samples_ms': samples, 'ms_b1': {
      system: statistics.median(samples[system]) for system in pair}}


def _suffix(precision):
  return '_bf16' if 'bfloat16' in precision else ''


def _kernels(settings, suffixes=('', '_bf16')):
  """{name: (function, args, FLOPs)} of the peak kernels, per suffix."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  n, (side, channels), (batch, small, wide) = PEAK_SHAPES[settings['quick']]
  conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, 'SAME'))
  kernels = {}
  for suffix in suffixes:
    dtype = tf.bfloat16 if suffix else tf.float32
    normal = lambda shape, dtype=dtype: tf.cast(tf.random.normal(shape),
                                                dtype)
    for name, (b, s, c) in (('conv', (1, side, channels)),
                            ('conv_batched', (batch, small, wide))):
      kernels[name + suffix] = (conv, (normal([b, s, s, c]),
                                       normal([3, 3, c, c])),
                                2.0 * b * s * s * c * c * 9)
    kernels['matmul' + suffix] = (tf.function(tf.matmul), (
        normal([n, n]), normal([n, n])), 2.0 * n ** 3)
  return kernels


def _peak(settings):
  n, (side, channels), (batch, small, wide) = PEAK_SHAPES[settings['quick']]
  result = {'matmul_shape': f'{n}x{n} @ {n}x{n}',
            'conv_shape': f'[1, {side}, {side}, {channels}] * 3x3 -> '
                          f'{channels}',
            'conv_batched_shape': f'[{batch}, {small}, {small}, {wide}] * '
                                  f'3x3 -> {wide}',
            'load': [os.getloadavg()[0]]}
  for name, (function, args, flop) in _kernels(settings).items():
    function(*args)  # warm-up
    result[f'{name}_gflops_per_s'] = flop / 1e9 / min(
        timing.seconds(function, args)
        for _ in range(settings['peak_repeats']))
  result['load'].append(os.getloadavg()[0])
  return result


# ----------------------------------------------------------- the report


def peak_gflops(peak, suffix):
  """The best kernel's GFLOP/s ('' float32, '_bf16'), or None."""
  rates = [(peak or {}).get(f'{kernel}{suffix}_gflops_per_s')
           for kernel in KERNELS]
  return max((rate for rate in rates if rate), default=None)


def _table(table_id, title, rows, *specs):
  """A table of columns 'key|header|format|suffix' (model and px first
  unless `specs` starts with '-')."""
  if specs[0] != '-':
    specs = ('model|model', 'px|px|d', *specs)
  columns = [results.column(key, header, fmt or None, None, suffix)
             for key, header, fmt, suffix in (
                 (spec.split('|') + ['', ''])[:4] for spec in specs
                 if spec != '-')]
  return results.table(table_id, columns, rows, title)


def _pct(rate, peak):
  return None if rate is None or not peak else 100 * rate / peak


def report(store, settings) -> dict:
  """The result: one table per view, rows as numbers (None: not measured)."""
  got = lambda name: store.result(name, settings)
  entry = lambda name: store.entry(name, settings) or {}
  sizes = sorted({jobs_lib.Job.parse(name).size for name in store.data['jobs']
                  if name.startswith(('infer-', 'train-')) and got(name)})
  measured = [(system, size) for size in sizes for system in systems.NAMES
              if got(f'infer-{system}-{size}') or got(f'train-{system}-{size}')]
  speed, peaks, limit, backbone, pipeline, details, pairs = (
      [] for _ in range(7))
  for size in sizes:
    peak = got(f'peak-{size}')
    if peak:
      peaks.append(dict(
          px=size, at=entry(f'peak-{size}').get('time'), f32=peak_gflops(
              peak, ''), bf16=peak_gflops(peak, '_bf16'), **{
                  f'{k}{s}': peak.get(f'{k}{s}_gflops_per_s')
                  for s in ('', '_bf16') for k in KERNELS}))
  for system, size in measured:
    i = got(f'infer-{system}-{size}') or {}
    t = got(f'train-{system}-{size}') or {}
    at = [entry(f'{kind}-{system}-{size}') for kind in ('infer', 'train')]
    row = lambda **values: dict(model=systems.NAMES[system], px=size, **values)
    load = lambda r: '..'.join(f'{v:.1f}' for v in r['load']) if r else None
    speed.append(row(b1=i.get('ms_per_image_b1'), b4=i.get('ms_per_image_b4'),
                     train=t.get('s_per_step'), rss1=i.get('rss_mib_b1'),
                     rss4=i.get('rss_mib_b4'), rss_train=t.get('rss_mib')))
    details.append(row(
        first1=i.get('first_call_s_b1'), first4=i.get('first_call_s_b4'),
        first_step=t.get('first_step_s'), detections=i.get('detections_b1'),
        load_i=load(i), load_t=load(t), job_i=at[0].get('seconds'),
        job_t=at[1].get('seconds'), at_i=at[0].get('time'),
        at_t=at[1].get('time')))
    if t:
      images = systems.TRAIN_BATCH / t['s_per_step']
      pipeline.append(row(
          shape=str(tuple(t['image_shape'])), data=t['data_images_per_s'],
          steps=1 / t['s_per_step'], images=images,
          ratio=t['data_images_per_s'] / images))
    if not i:
      continue
    peak = peak_gflops(got(f'peak-{size}'), _suffix(i['info']['precision']))
    gflops, bb = i['flops']['gflops'], i['backbone_flops']['gflops']
    b1, b4 = (gflops / i[f'ms_per_image_b{b}'] * 1e3 for b in (1, 4))
    bb_rate = bb / i['backbone_ms_b1'] * 1e3
    limit.append(row(
        gflops=gflops, peak=peak, b1=b1, b1_pct=_pct(b1, peak), b4=b4,
        b4_pct=_pct(b4, peak), bb=bb, bb_ms=i['backbone_ms_b1'],
        bb_rate=bb_rate, bb_pct=_pct(bb_rate, peak),
        bb_share=100 * i['backbone_ms_b1'] / i['ms_per_image_b1']))
    against = i.get('backbone_vs_peak')
    if against:
      pct = against['percent_of_peak']
      backbone.append(row(
          rounds=len(pct), low=min(pct), high=max(pct),
          percent=statistics.median(pct),
          rate=statistics.median(against['backbone_gflops_per_s']),
          peak=statistics.median(against['peak_gflops_per_s'])))
  for pair in PAIRS:
    for size in sizes:
      times = got(f"pair-{'+'.join(pair)}-{size}")
      gflops = [(got(f'infer-{s}-{size}') or {}).get('flops', {}).get(
          'gflops') for s in pair]
      if not times or None in gflops:
        continue
      rates = [[g * 1e3 / ms for ms in times['samples_ms'][s]]
               for g, s in zip(gflops, pair)]
      medians = [statistics.median(r) for r in rates]
      pairs.append(dict(
          first=systems.NAMES[pair[0]], second=systems.NAMES[pair[1]],
          px=size, rounds=len(rates[0]), ms1=times['ms_b1'][pair[0]],
          ms2=times['ms_b1'][pair[1]], rate1=medians[0], rate2=medians[1],
          ratio=medians[0] / medians[1],
          wins=sum(a >= b for a, b in zip(*rates))))
  pct = '% of peak|.1f| %'
  body = [
      results.text(('--quick: smoke-test settings, not a benchmark. '
                    if settings['quick'] else '') + NOTES.format(**settings)),
      _table('speed', 'Speed and memory', speed,
             'b1|inference ms/image, batch 1|.0f',
             'b4|inference ms/image, batch 4|.0f',
             'train|training s/step, batch 2|.2f',
             'rss1|peak RSS MiB, inference b1|.0f', 'rss4|b4|.0f',
             'rss_train|peak RSS MiB, training|.0f'),
      _table('peaks', "The limit: FLOPs against the machine's peak", peaks,
             '-', 'px|px|d', 'at|measured at', *(
                 f"{k}{s}|{k} {'bf16' if s else 'f32'}|.0f"
                 for s in ('', '_bf16') for k in KERNELS),
             'f32|peak f32|.0f', 'bf16|peak bf16|.0f'),
      results.text(LIMIT_NOTE),
      _table('limit', '', limit, 'gflops|GFLOPs/image|.1f',
             'peak|peak GFLOP/s|.0f', 'b1|GFLOP/s b1|.1f', 'b1_pct|' + pct,
             'b4|GFLOP/s b4|.1f', 'b4_pct|' + pct, 'bb|backbone GFLOPs|.1f',
             'bb_ms|backbone ms|.0f', 'bb_rate|backbone GFLOP/s|.1f',
             'bb_pct|' + pct, 'bb_share|backbone share of b1 time|.0f| %'),
      _table('backbone', 'Backbones against the peak kernels of their '
             'precision, timed back to back in one process, round by round '
             '(medians)', backbone, 'rounds|rounds|d',
             'rate|backbone GFLOP/s|.1f', 'peak|peak GFLOP/s|.0f',
             'percent|' + pct, 'low|lowest round|.1f| %',
             'high|highest round|.1f| %'),
      _table('pair', 'Interleaved in one process, batch 1 (medians over the '
             'rounds)', pairs, '-', 'first|first', 'second|second', 'px|px|d',
             'rounds|rounds|d', 'ms1|first ms|.0f', 'ms2|second ms|.0f',
             'rate1|first GFLOP/s|.1f', 'rate2|second GFLOP/s|.1f',
             'ratio|ratio|.2f',
             'wins|rounds with the first at least the second|d'),
      _table('pipeline', "Input pipeline against training: each system's "
             "own pipeline (torchvision's: a Python PNG loader) timed alone; "
             'above 1 it outruns the step', pipeline,
             'shape|batch image shape', 'data|tf.data images/s|.1f',
             'steps|training steps/s|.3f', 'images|training images/s|.2f',
             'ratio|tf.data / training|.1f'),
      _table('details', 'Details', details, 'first1|first call s, b1|.0f',
             'first4|first call s, b4|.0f',
             'first_step|first training step s|.0f',
             'detections|detections (image 0, b1)|d',
             'load_i|load, inference', 'load_t|load, training',
             'job_i|job s, inference|.0f', 'job_t|job s, training|.0f',
             'at_i|measured at, inference', 'at_t|measured at, training'),
      results.text(_models_text(got, sizes))]
  body = [block for block in body  # tables with rows only
          if 'table' not in block or block['table']['rows']]
  if store.failed(settings):
    body.append(results.text('Failed jobs (no numbers): '
                             f"{', '.join(store.failed(settings))}."))
  torch = [got(f'infer-{s}-{z}')['info']['torch'] for s, z in measured
           if 'torch' in (got(f'infer-{s}-{z}') or {}).get('info', {})]
  return results.new(
      'speed', 'MaskLab against Model Garden and torchvision, size by size'
      + (' (--quick smoke test)' if settings['quick'] else ''), body,
      settings, extra_versions={'torch': torch[0]} if torch else None)


NOTES = (
    'Random weights, 80 classes, at most 100 detections, float32 unless the '
    'model says bfloat16; medians of {runs} timed calls after a warm-up. '
    "Peak RSS: the job process's VmHWM (model build included), after the "
    'batch-1 calls, after batch 4, at the end of training. Inputs: MaskLab '
    'takes uint8 images and normalises in the graph; Model Garden the '
    'normalised float images its parser makes, padded to a multiple of '
    '2^max_level (800 -> 832 px), anchors made in the graph. Training: '
    'MaskLab through `Trainer._train_step`, Model Garden through '
    '`MaskRCNNTask.train_step` (SGD, momentum 0.9, clip norm 10), '
    'torchvision eager (SGD lr 0.01, momentum 0.9; lr 0 for the fine-tuning '
    'recipe, whose identity frozen batch norm turns random weights NaN). '
    "Model Garden's pre-NMS score threshold: "
    '{model_garden_score_threshold}.')
LIMIT_NOTE = (
    'GFLOPs per image of the batch-1 inference graph (TF profiler: '
    "multiply-add = 2, convolutions and matmuls; torchvision: torch's flop "
    'counter); achieved = GFLOPs / time per image; % of peak against the '
    "peak of the row's size and precision. Backbone: the ResNet-50 alone "
    '(MaskLab: atrous at its output stride; Model Garden and torchvision: '
    'without the FPN), batch 1. The batch-4 rates take the batch-1 GFLOPs '
    'per image.')


def _models_text(got, sizes) -> str:
  """Each system's settings, and the op types its FLOPs leave out."""
  lines = ['Models as measured (Model Garden keeps its COCO recipe, MaskLab '
           'its configs/ flags):', '']
  uncounted = ['', "FLOPs the profiler does not see (op types it has no "
               'count for, by million output elements, at the largest size):',
               '']
  for system, name in systems.NAMES.items():
    measured = [got(f'{kind}-{system}-{size}') for size in sizes
                for kind in ('infer', 'train')
                if got(f'{kind}-{system}-{size}')]
    if not measured:
      continue
    lines.append(f'- {name}: ' + ', '.join(
        f'{key}={value}' for key, value in measured[0]['info'].items()
        if key != 'min_size'))
    flops = next((got(f'infer-{system}-{size}')['flops']
                  for size in reversed(sizes)
                  if got(f'infer-{system}-{size}')), None)
    if system in systems.TORCHVISION and flops:
      uncounted.append(f'- {name}: torch.utils.flop_counter counts '
                       'convolutions and matmuls only (not RoIAlign, NMS)')
    elif flops:
      uncounted.append(f'- {name}: ' + ', '.join(
          f'{op} ({elements:.1f}M)' for op, elements in flops['uncounted_top'])
          + (f"; {flops['unknown_shape_ops']} conv/matmul ops without static "
             'shapes (their FLOPs are missing)'
             if flops['unknown_shape_ops'] else ''))
  return '\n'.join(lines + uncounted)
