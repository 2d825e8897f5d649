"""MaskLab R50 against Model Garden's Mask R-CNN R50-FPN: one run, one machine.

Usage:
  python benchmarks/side_by_side.py [--sizes=256,512,800] [--runs=3]
      [--systems=masklab_os16,masklab_os8,masklab_fast,model_garden]
      [--work_dir=DIR] [--write_results]
      [--results_path=benchmarks/RESULTS.md] [--skip_assemble]

  # Smoke test (128 px, one timed call, small peak kernels), results
  # written beside the scratch files instead of benchmarks/RESULTS.md:
  python benchmarks/side_by_side.py --quick --systems=masklab_os16 \
      --work_dir=/tmp/sbs --write_results --results_path=/tmp/sbs/RESULTS.md

Systems, with random weights (speed depends on shapes, not on values), 80
object classes (MaskLab counts them without the background, Model Garden
with it: 81) and at most 100 detections per image; float32 unless named:
  masklab_os16, masklab_os8: configs/masklab_r50_coco.flags at output
    stride 16 or 8 (--max_detections=100);
  masklab_fast: configs/masklab_r50_fast.flags (output stride 16, 100 test
    proposals, 32-channel hypercolumn) in mixed_bfloat16, what its
    --mixed_precision=auto picks on CPUs with bfloat16 units;
  masklab_fast_fp32: the same in float32, what auto picks elsewhere;
  model_garden: Model Garden's `maskrcnn_resnetfpn_coco` experiment
    (`official.vision`, no checkpoint) with detection_generator
    max_num_detections=100, no sync batch norm, no scale jitter;
  model_garden_bf16: the same under tf_keras's mixed_bfloat16 policy;
  torchvision: torchvision's `maskrcnn_resnet50_fpn` (random weights, score
    threshold 0, 100 detections), run by benchmarks/torchvision_maskrcnn.py
    with the interpreter --torchvision_python names (an environment with
    torch, torchvision and pycocotools; none is this project's dependency);
  torchvision_finetune: the same model as its builder makes it for
    fine-tuning from ImageNet weights (frozen batch norm, stem and layer1),
    the recipe its published COCO numbers use.
The default --systems leave out the two twins and the torchvision rows.

For every shortest side in --sizes (square images, so no resizing):
  inference: ms/image at batch 1 and 4, a warm-up call (tracing, XLA
    compilation) then the median of --runs timed calls;
  training: s/step at batch 2 (median of --runs steps after a warm-up step)
    on synthetic shapes images written as TFRecords, read by each system's
    own input pipeline; the batches are fetched before the steps are timed,
    and the pipeline alone is timed apart (tf.data images/s);
  memory: peak resident set (VmHWM) of the process that did the job;
  FLOPs: the TF profiler on the inference concrete function's graph at
    batch 1 (benchmarks/model_cost.py's counting: multiply-add = 2 FLOPs,
    convolutions and matmuls, not what runs inside XLA clusters), and on
    the ResNet-50 backbone alone, timed alone too;
  the machine's peak: the best GFLOP/s of a 4096^2 tf.matmul and of a 3x3
    tf.nn.conv2d [1, 128, 128, 256] -> 256, measured again before each
    size's jobs (a shared 2-core machine's speed drifts by 2x between
    hours), so achieved GFLOP/s read as a share of what this machine could
    do when those rows were measured;
and benchmarks/assemble.py's table (--skip_model_cost) for the assembling
layer. The paper's config and Model Garden (float32) are also timed
interleaved in one process at batch 1 (PAIR_ROUNDS rounds, a `pair-` job),
since rows measured minutes apart on this machine can differ by more than
the models do.

Every job (a size's peak, data, inference or training of one system at one
size)
runs in its own subprocess: each starts with fresh memory, so its peak
resident set is its own, and a crash or an out-of-memory kill costs one
row. Results accumulate in --work_dir/results.json as jobs finish; running
the same command (with the same --work_dir: without one, the run works in
a temporary folder, removed at the end) again resumes, redoing only the
jobs that are missing,
failed, or were measured under other settings. Job logs are in
--work_dir/logs. The report is printed and, with --write_results, written
to --results_path; everything from the `<!-- notes -->` line of an
existing file on (the before/after list that speed work appends to) is
kept.
"""

import datetime
import importlib.metadata
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

try:
  from benchmarks import scratch
  from benchmarks import timing
except ImportError:  # run as a script: benchmarks/ is on the path
  import scratch
  import timing

# TensorFlow, Model Garden and MaskLab are imported inside the job
# functions: the parent process only launches jobs and reports, and each
# job's process should load only what its job needs.
# pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RESULTS = os.path.join(REPO, 'benchmarks', 'RESULTS.md')
NOTES_MARKER = '<!-- notes -->'
DEFAULT_NOTES = f"""{NOTES_MARKER}
## Before/after

Speed work appends here; the script keeps everything from the marker above
on when it rewrites this file. One line per change: date, change, commit,
then the rows it moved (model, px, before -> after), e.g.
- YYYY-MM-DD `<commit>` <change>: masklab_os8 512 px inference b1
  X -> Y ms/image, training X -> Y s/step.
"""

SYSTEMS = {
    'masklab_os16': 'MaskLab R50, OS 16',
    'masklab_os8': 'MaskLab R50, OS 8',
    'masklab_fast_fp32': 'MaskLab R50 fast, float32',
    'masklab_fast': 'MaskLab R50 fast, bfloat16',
    'model_garden': 'Model Garden R50-FPN',
    'model_garden_bf16': 'Model Garden R50-FPN, bfloat16',
    'torchvision': 'torchvision Mask R-CNN R50-FPN (PyTorch)',
    'torchvision_finetune': 'torchvision Mask R-CNN R50-FPN, fine-tuning '
                            'recipe (frozen BN, stem, layer1)',
}
# MaskLab systems: (flags file, overrides). masklab_r50_fast.flags says
# --mixed_precision=auto (precision.resolve: host-dependent); each twin
# names its precision, so a row means the same on every machine.
MASKLAB_SYSTEMS = {
    'masklab_os16': ('configs/masklab_r50_coco.flags',
                     ('--output_stride=16',)),
    'masklab_os8': ('configs/masklab_r50_coco.flags', ('--output_stride=8',)),
    'masklab_fast_fp32': ('configs/masklab_r50_fast.flags',
                          ('--mixed_precision=',)),
    'masklab_fast': ('configs/masklab_r50_fast.flags',
                     ('--mixed_precision=mixed_bfloat16',)),
}
# Model Garden systems: their tf_keras mixed precision policy.
MODEL_GARDEN_SYSTEMS = {'model_garden': 'float32',
                        'model_garden_bf16': 'mixed_bfloat16'}
# Run by benchmarks/torchvision_maskrcnn.py under --torchvision_python.
# Each with the arguments that make it.
TORCHVISION_SYSTEMS = {'torchvision': (),
                       'torchvision_finetune': ('--fine_tune',)}
DEFAULT_SYSTEMS = ('masklab_os16', 'masklab_os8', 'masklab_fast',
                   'model_garden')
NUM_CLASSES = 80  # COCO's object classes, background not counted.
MAX_DETECTIONS = 100
TRAIN_BATCH = 2
INFER_BATCHES = (1, 4)
# Systems also timed interleaved in one process (`_measure_pair`): the
# issue's GFLOP/s target compares the paper's config with Model Garden's.
PAIRS = (('masklab_os8', 'model_garden'),)
PAIR_ROUNDS = 10
# Keys of a job's model info that only restate its image size (the
# report's px column says it).
SIZE_KEYS = ('min_size',)
# Rounds of the backbone timed back to back with the peak kernels in its
# inference job (`_backbone_against_peak`).
BACKBONE_PEAK_ROUNDS = 5
# Peak kernels: big enough to reach the machine's steady GFLOP/s.
MATMUL_SIZE = 4096
CONV_SHAPE = (128, 256)  # [1, side, side, channels] -> channels, 3x3.
# A batch of small maps with wide channels: the shape of the per-box conv5
# block's convolutions, whose larger GEMMs oneDNN runs faster than the
# single big map's (on the Xeon of RESULTS.md the models' own convs beat
# CONV_SHAPE's rate); [batch, side, side, channels] -> channels, 3x3.
CONV_BATCHED_SHAPE = (64, 16, 512)
PEAK_KERNELS = ('matmul', 'conv', 'conv_batched')
# --quick: small enough for a smoke test in a few minutes on 2 cores.
QUICK = {'sizes': [128], 'runs': 1, 'num_images': 4, 'data_batches': 2,
         'peak_repeats': 2, 'matmul_size': 1024, 'conv_shape': (32, 64),
         'conv_batched_shape': (4, 8, 64)}
FLAGS = flags.FLAGS


def define_flags():
  """Flags of the script; not at import, so other scripts can import it."""
  flags.DEFINE_list('sizes', ['256', '512', '800'],
                    'Shortest image sides (square images).')
  flags.DEFINE_list('systems', list(DEFAULT_SYSTEMS),
                    f'Any of {", ".join(SYSTEMS)}.')
  flags.DEFINE_integer('runs', 3,
                       'Timed inference calls and training steps (median).')
  flags.DEFINE_string('work_dir', None,
                      'Synthetic data, job logs and results.json (resume); '
                      'default: a temporary folder, removed at the end.')
  flags.DEFINE_integer('num_images', 16,
                       'Synthetic training images written per size.')
  flags.DEFINE_integer('data_batches', 20,
                       'Batches timed for the tf.data images/s.')
  flags.DEFINE_integer('peak_repeats', 5,
                       'Timed calls of each peak kernel (best is kept).')
  flags.DEFINE_float('model_garden_score_threshold', 0.0,
                     "Model Garden's pre-NMS score threshold at inference. "
                     "Its default 0.05 keeps no box of a random-weight "
                     '81-class model (scores ~1/81), which would skip the '
                     "NMS work a trained model does; 0.0 is MaskLab's.")
  flags.DEFINE_bool('quick', False,
                    'Smoke test: 128 px, 1 run, 4 images, small peak '
                    'kernels, tiny assembling table (explicit flags win).')
  flags.DEFINE_bool('skip_assemble', False,
                    "Leave out benchmarks/assemble.py's table.")
  flags.DEFINE_bool('write_results', False,
                    'Write the report to --results_path.')
  flags.DEFINE_string('results_path', DEFAULT_RESULTS,
                      'Where --write_results writes the report.')
  flags.DEFINE_integer('job_timeout_s', 4 * 3600,
                       'A job running longer is killed and marked failed.')
  flags.DEFINE_string('torchvision_python', '',
                      'Python of an environment with torch, torchvision '
                      'and pycocotools; needed by the torchvision system.')
  flags.DEFINE_string('job', '', 'Internal: the job a child process runs.')
  flags.DEFINE_string('job_output', '', 'Internal: where a child writes.')


# ------------------------------------------------------------ settings


def _settings():
  """The flags that decide what a job measures, --quick applied."""
  def chosen(name):
    if FLAGS.quick and not FLAGS[name].present:
      return QUICK[name]
    return FLAGS[name].value
  return {
      'runs': chosen('runs'),
      'num_images': chosen('num_images'),
      'data_batches': chosen('data_batches'),
      'peak_repeats': chosen('peak_repeats'),
      'quick': FLAGS.quick,
      'model_garden_score_threshold': FLAGS.model_garden_score_threshold,
  }


def _sizes():
  if FLAGS.quick and not FLAGS['sizes'].present:
    return QUICK['sizes']
  return [int(size) for size in FLAGS.sizes]


def _data_prefix(work_dir, size, num_images):
  """TFRecord prefix of the synthetic training set of one size."""
  return os.path.join(work_dir, 'data', f'{size}px_{num_images}images',
                      'records', 'train')


# ------------------------------------------------------ child: helpers


def _static_function(python_function, args):
  """tf.function traced once, at the shapes of `args`."""
  import tensorflow as tf
  spec = lambda t: tf.TensorSpec(t.shape, t.dtype)
  return tf.function(python_function, input_signature=[
      tf.nest.map_structure(spec, arg) for arg in args])


def _flops(function):
  """model_cost.profile_flops, condensed for the report."""
  # The sibling module is on the path when this file runs as a script,
  # the package is when it is imported from the repo root.
  try:
    from benchmarks import model_cost
  except ImportError:
    import model_cost
  profile = model_cost.profile_flops(function.get_concrete_function())
  uncounted = sorted(profile['uncounted'].items(), key=lambda kv: -kv[1])
  return {'gflops': profile['gflops'],
          'unknown_shape_ops': len(profile['unknown_shape_ops']),
          'uncounted_top': uncounted[:6]}


def _backbone_against_peak(function, args, gflops, precision, settings):
  """The backbone's GFLOP/s over the peak kernels' best, round by round.

  The peak job runs up to an hour before or after a backbone job, and this
  machine's speed drifts by tens of percent within minutes (the same
  backbone read 36 % of the peak in one run and 79 % in the next), so each
  round times the backbone and then the peak kernels of its precision
  back to back, and the ratio is taken within the round.
  """
  kernels = _peak_kernels(settings, (_peak_suffix(precision),))
  for kernel, kernel_args, _ in kernels.values():
    kernel(*kernel_args)  # warm-up
  rounds = 1 if settings['quick'] else BACKBONE_PEAK_ROUNDS
  backbone_rates, peak_rates = [], []
  for _ in range(rounds):
    backbone_rates.append(gflops / timing.seconds(function, args))
    peak_rates.append(max(flop / 1e9 / timing.seconds(kernel, kernel_args)
                          for kernel, kernel_args, flop in kernels.values()))
  return {'backbone_gflops_per_s': backbone_rates,
          'peak_gflops_per_s': peak_rates,
          'percent_of_peak': [100 * b / p
                              for b, p in zip(backbone_rates, peak_rates)]}


def _measure_inference(whole, make_args, backbone, backbone_args, runs,
                       count_detections, precision, settings):
  """Times and counts FLOPs of a model at INFER_BATCHES and its backbone.

  Args:
    whole: python function of the model's inference.
    make_args: batch size -> the positional arguments of `whole`.
    backbone: python function of the backbone alone.
    backbone_args: the arguments of `whole` -> those of `backbone`.
    runs: timed calls (median).
    count_detections: outputs of `whole` -> valid detections of image 0.
    precision: the model's policy ('float32', 'mixed_bfloat16', ...): which
      peak kernels the backbone is set against.
    settings: `_settings()`.
  """
  import tensorflow as tf
  result = {}
  load_before = os.getloadavg()[0]
  for batch in INFER_BATCHES:
    args = make_args(batch)
    function = _static_function(whole, args)
    first, median = timing.time_calls(function, args, runs)
    result[f'ms_per_image_b{batch}'] = 1e3 * median / batch
    result[f'first_call_s_b{batch}'] = first
    # VmHWM only grows: read after each batch size, before anything else
    # runs, it is the peak of that batch size (and the build before it).
    result[f'rss_mib_b{batch}'] = timing.peak_rss_mib()
    if batch == 1:
      result['detections_b1'] = int(count_detections(function(*args)))
      result['flops'] = _flops(function)
      args1 = backbone_args(args)
  function = _static_function(backbone, args1)
  first, median = timing.time_calls(function, args1, runs)
  result['backbone_ms_b1'] = 1e3 * median
  result['backbone_flops'] = _flops(function)
  result['backbone_vs_peak'] = _backbone_against_peak(
      function, args1, result['backbone_flops']['gflops'], precision,
      settings)
  result['load'] = [load_before, os.getloadavg()[0]]
  result['tf_version'] = tf.__version__
  return result


# ------------------------------------------------------ child: MaskLab


def _masklab_configs(system, size, extra=()):
  """The system's config (MASKLAB_SYSTEMS) for square `size` images."""
  from masklab_tf import config as config_lib
  flagfile, system_overrides = MASKLAB_SYSTEMS[system]
  overrides = (*system_overrides, f'--num_classes={NUM_CLASSES}',
               f'--max_detections={MAX_DETECTIONS}', f'--min_sizes={size}',
               f'--eval_min_size={size}', f'--max_size={size}', *extra)
  return config_lib.from_flagfile(os.path.join(REPO, flagfile), overrides)


def _masklab_info(configs):
  """The settings a MaskLab row was measured with (the report lists them)."""
  from masklab_tf.modeling import precision as precision_lib
  model = configs.model
  return {
      'output_stride': model.output_stride,
      'backbone_depth': model.backbone_depth,
      'test_num_proposals': model.test_num_proposals,
      'num_proposals': model.num_proposals,
      'num_sampled_rois': model.num_sampled_rois,
      'max_instances': configs.data.max_instances,
      'mask_crop_size': configs.geometry.mask_crop_size,
      'deformable_crop': model.deformable_crop,
      'hypercolumn_channels': model.hypercolumn_channels,
      'refine_filters': model.refine_filters,
      'detection_score_threshold': model.detection_score_threshold,
      'precision': (precision_lib.resolve(configs.train.mixed_precision)
                    or 'float32'),
  }


def _masklab_inference_setup(system, size):
  """What `_measure_inference` (and `_measure_pair`) take, for MaskLab."""
  import numpy as np
  import tensorflow as tf
  from masklab_tf.modeling import factory
  configs = _masklab_configs(system, size)
  models = factory.build_models(configs.model, configs.geometry,
                                configs.data.max_instances,
                                precision=configs.train.mixed_precision)
  model = models.inference_model
  normalize = model.get_layer('normalize')
  rng = np.random.default_rng(0)

  def make_args(batch):
    image = rng.integers(0, 256, [batch, size, size, 3])
    return ({'image': tf.constant(image, tf.uint8),
             'image_size': tf.constant([[size, size]] * batch, tf.int32)},)

  return dict(
      whole=lambda inputs: model(inputs, training=False),
      make_args=make_args,
      backbone=lambda image: models.backbone(normalize(image),
                                             training=False),
      backbone_args=lambda args: (args[0]['image'],),
      count_detections=lambda outputs: outputs['num_detections'][0],
      info=_masklab_info(configs))


def _masklab_training(system, size, settings):
  from masklab_tf.training import trainer as trainer_lib
  pattern = _data_prefix(FLAGS.work_dir, size, settings['num_images']) + '-*'
  configs = _masklab_configs(system, size, (
      f'--train_tfrecords={pattern}', f'--batch_size={TRAIN_BATCH}',
      '--image_summary_every=0', '--shuffle_buffer=16'))
  # The Trainer wants a model_dir (checkpoint manager); nothing is saved.
  model_dir = tempfile.mkdtemp(dir=FLAGS.work_dir, prefix='model_')
  try:
    trainer = trainer_lib.Trainer(configs, model_dir)
    # The tf.function train() runs, without its checkpointing and logging.
    train_step = trainer._train_step  # pylint: disable=protected-access
    result = timing.measure_training(
        trainer.dataset, lambda batch: train_step(batch)[0]['total'],
        runs=settings['runs'], data_batches=settings['data_batches'],
        image_shape=lambda batch: batch['image'].shape,
        batch_size=TRAIN_BATCH)
  finally:
    shutil.rmtree(model_dir, ignore_errors=True)
  result['info'] = _masklab_info(configs)
  return result


# ------------------------------------------------- child: Model Garden


def _model_garden_task(system, size, settings, pattern='unused-*'):
  """(task, config, padded side) of maskrcnn_resnetfpn_coco at `size`, in
  the system's precision (set as the process's policy: one job, one
  process)."""
  import tf_keras
  # Importing the task registers the experiment with exp_factory.
  from official.core import exp_factory
  from official.vision.tasks import maskrcnn as maskrcnn_task
  policy = MODEL_GARDEN_SYSTEMS[system]
  tf_keras.mixed_precision.set_global_policy(policy)
  config = exp_factory.get_exp_config('maskrcnn_resnetfpn_coco')
  config.override({
      # Its default is bfloat16 (for TPUs); each system says its own.
      'runtime': {'mixed_precision_dtype':
                      'float32' if policy == 'float32' else 'bfloat16'},
      'task': {
          'init_checkpoint': '',  # random weights, as MaskLab's
          'model': {
              'num_classes': NUM_CLASSES + 1,  # it counts the background
              'input_size': [size, size, 3],
              'detection_generator': {
                  'max_num_detections': MAX_DETECTIONS,
                  'pre_nms_score_threshold':
                      settings['model_garden_score_threshold']},
              # One replica: sync batch norm would only add an all-reduce.
              'norm_activation': {'use_sync_bn': False},
          },
          'train_data': {
              'input_path': pattern,
              'global_batch_size': TRAIN_BATCH,
              'dtype': 'float32',
              'shuffle_buffer_size': 16,
              # bin/make_tfrecords writes 0/1 PNG masks.
              'decoder': {'type': 'simple_decoder',
                          'simple_decoder': {'mask_binarize_threshold': 0.0}},
              # No scale jitter: both systems see the image at `size`.
              'parser': {'aug_scale_min': 1.0, 'aug_scale_max': 1.0},
          },
      },
  }, is_strict=True)
  config.task.annotation_file = None
  config.validate()
  stride = 2 ** config.task.model.max_level
  padded = math.ceil(size / stride) * stride
  return maskrcnn_task.MaskRCNNTask(config.task), config, padded


def _model_garden_model(task, config, size, padded):
  """The task's model, built for the padded images it will be fed.

  The parser pads images to a multiple of 2**max_level (800 -> 832), but
  build_model makes a functional backbone whose input is fixed at
  model.input_size, which the parser also takes as its output size; an
  800 model refuses 832 images. So the model is built at the padded side
  and input_size is put back for the parser.
  """
  config.task.model.input_size = [padded, padded, 3]
  model = task.build_model()
  config.task.model.input_size = [size, size, 3]
  return model


def _model_garden_info(config):
  model = config.task.model
  return {
      'levels': [model.min_level, model.max_level],
      'test_num_proposals': model.roi_generator.test_num_proposals,
      'num_proposals': model.roi_generator.num_proposals,
      'num_sampled_rois': model.roi_sampler.num_sampled_rois,
      'num_sampled_masks': model.mask_sampler.num_sampled_masks,
      'max_instances': config.task.train_data.parser.max_num_instances,
      'detection_head': f'{model.detection_head.num_convs} convs, '
                        f'{model.detection_head.num_fcs} fc',
      'mask_head': f'{model.mask_head.num_convs} convs x '
                   f'{model.mask_head.num_filters}, '
                   f'{2 * model.mask_roi_aligner.crop_size} px masks',
      'pre_nms_score_threshold':
          model.detection_generator.pre_nms_score_threshold,
      'precision': config.runtime.mixed_precision_dtype,
  }


def _model_garden_inference_setup(system, size, settings):
  """What `_measure_inference` (and `_measure_pair`) take, for Model Garden."""
  import numpy as np
  import tensorflow as tf
  task, config, padded = _model_garden_task(system, size, settings)
  model = _model_garden_model(task, config, size, padded)
  rng = np.random.default_rng(0)

  def make_args(batch):
    # The parser's output: normalised float images padded to `padded`;
    # image_shape is the valid region. Without anchor_boxes the model
    # makes its own from the image shape, in the graph, as MaskLab does.
    images = rng.normal(size=[batch, padded, padded, 3])
    return (tf.constant(images, tf.float32),
            tf.constant([[size, size]] * batch, tf.float32))

  return dict(
      whole=lambda images, shape: model(images, image_shape=shape,
                                        training=False),
      make_args=make_args,
      backbone=lambda images: model.backbone(images, training=False),
      backbone_args=lambda args: (args[0],),
      count_detections=lambda outputs: outputs['num_detections'][0],
      info=_model_garden_info(config))


def _inference_setup(system, size, settings):
  if system in MODEL_GARDEN_SYSTEMS:
    return _model_garden_inference_setup(system, size, settings)
  return _masklab_inference_setup(system, size)


def _inference(system, size, settings):
  setup = _inference_setup(system, size, settings)
  info = setup.pop('info')
  result = _measure_inference(runs=settings['runs'],
                              precision=info['precision'], settings=settings,
                              **setup)
  result['info'] = info
  return result


def _measure_pair(systems, size, settings):
  """Batch-1 inference of `systems` in one process, calls interleaved.

  The machine's speed drifts by 2x between hours and by tens of percent
  between minutes, so two rows measured minutes apart can disagree by more
  than the models differ; round r times every system's call r back to
  back, so each round compares them at one speed.
  """
  functions, args = {}, {}
  for system in systems:
    setup = _inference_setup(system, size, settings)
    args[system] = setup['make_args'](1)
    functions[system] = _static_function(setup['whole'], args[system])
    functions[system](*args[system])  # Tracing, XLA compilation.
  rounds = 1 if settings['quick'] else PAIR_ROUNDS
  samples = {system: [] for system in systems}
  for _ in range(rounds):
    for system in systems:
      samples[system].append(
          1e3 * timing.seconds(functions[system], args[system]))
  return {'systems': list(systems), 'samples_ms': samples,
          'ms_b1': {system: statistics.median(samples[system])
                    for system in systems}}


def _model_garden_training(system, size, settings):
  import tf_keras
  import tensorflow as tf
  pattern = _data_prefix(FLAGS.work_dir, size, settings['num_images']) + '-*'
  task, config, padded = _model_garden_task(system, size, settings, pattern)
  model = _model_garden_model(task, config, size, padded)
  dataset = task.build_inputs(config.task.train_data)
  # MaskLab's optimizer settings (SGD, momentum 0.9, clipping at norm 10);
  # the learning rate is small so that random weights stay finite.
  optimizer = tf_keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9,
                                      global_clipnorm=10.0)
  train_step = tf.function(
      lambda inputs: task.train_step(inputs, model, optimizer)[task.loss])
  result = timing.measure_training(
      dataset, train_step, runs=settings['runs'],
      data_batches=settings['data_batches'],
      image_shape=lambda batch: batch[0].shape, batch_size=TRAIN_BATCH)
  result['info'] = _model_garden_info(config)
  return result


# ------------------------------------------------- child: peak, data


def _peak_suffix(precision):
  """The peak kernels' name suffix for a row's precision ('float32',
  'mixed_bfloat16', Model Garden's 'bfloat16', ...): '_bf16' or ''."""
  return '_bf16' if 'bfloat16' in precision else ''


def _peak_shapes(settings):
  """(matmul side, (conv side, channels), (batch, side, channels)): the
  PEAK_KERNELS' sizes, --quick applied."""
  if settings['quick']:
    return (QUICK['matmul_size'], QUICK['conv_shape'],
            QUICK['conv_batched_shape'])
  return MATMUL_SIZE, CONV_SHAPE, CONV_BATCHED_SHAPE


def _peak_kernels(settings, suffixes=('', '_bf16')):
  """{name: (function, args, FLOPs)} of the PEAK_KERNELS: a big matmul and
  two big 3x3 convolutions (one map, a batch of small maps), per suffix
  ('' float32, '_bf16' bfloat16)."""
  import tensorflow as tf
  n, (side, channels), (batch, small_side, wide) = _peak_shapes(settings)
  conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, 'SAME'))
  kernels = {}
  for suffix in suffixes:
    dtype = tf.bfloat16 if suffix == '_bf16' else tf.float32
    normal = lambda shape, dtype=dtype: tf.cast(tf.random.normal(shape),
                                                dtype)
    # (function, args, FLOPs) of a 3x3 conv [batch, side, side, c] -> c.
    conv_kernel = lambda batch, side, c, normal=normal: (
        conv, (normal([batch, side, side, c]), normal([3, 3, c, c])),
        2.0 * batch * side * side * c * c * 9)
    kernels[f'matmul{suffix}'] = (
        tf.function(tf.matmul), (normal([n, n]), normal([n, n])),
        2.0 * n ** 3)
    kernels[f'conv{suffix}'] = conv_kernel(1, side, channels)
    kernels[f'conv_batched{suffix}'] = conv_kernel(batch, small_side, wide)
  return kernels


def _measure_peak(settings):
  """Best GFLOP/s of each of the `_peak_kernels`, in float32 and in bfloat16
  (the CPU's bfloat16 units are another limit)."""
  import tensorflow as tf
  n, (side, channels), (batch, small_side, wide) = _peak_shapes(settings)
  result = {'matmul_shape': f'{n}x{n} @ {n}x{n}',
            'conv_shape': f'[1, {side}, {side}, {channels}] * 3x3 -> '
                          f'{channels}',
            'conv_batched_shape': f'[{batch}, {small_side}, {small_side}, '
                                  f'{wide}] * 3x3 -> {wide}',
            'load': [os.getloadavg()[0]]}
  for name, (function, args, flop) in _peak_kernels(settings).items():
    function(*args)  # warm-up
    best = min(timing.seconds(function, args)
               for _ in range(settings['peak_repeats']))
    result[f'{name}_gflops_per_s'] = flop / best / 1e9
  result['load'].append(os.getloadavg()[0])
  result['tf_version'] = tf.__version__
  return result


def _make_data(size, settings):
  """Synthetic shapes images at `size` px as TFRecords, once per size."""
  from masklab_tf.data import coco
  from masklab_tf.data import synthetic
  from masklab_tf.data import tfrecord
  prefix = _data_prefix(FLAGS.work_dir, size, settings['num_images'])
  root = os.path.dirname(os.path.dirname(prefix))
  synthetic.make_shapes(root, num_train=settings['num_images'], num_val=0,
                        image_size=size)
  dataset = coco.read_coco(os.path.join(root, 'train', 'annotations.json'),
                           os.path.join(root, 'train', 'images'))
  # Written last (renamed into place): its presence marks a complete set.
  tfrecord.write_tfrecords(dataset, prefix, num_shards=2)
  return {'images': len(dataset.records)}


def _child_main(name):
  """Runs one job in this (fresh) process; writes its result as json."""
  import tensorflow as tf
  tf.get_logger().setLevel('ERROR')
  settings = json.loads(os.environ['SIDE_BY_SIDE_SETTINGS'])
  kind, *rest = name.split('-')
  start = time.perf_counter()
  if kind == 'peak':
    result = _measure_peak(settings)
  elif kind == 'data':
    result = _make_data(int(rest[0]), settings)
  elif kind == 'infer':
    result = _inference(rest[0], int(rest[1]), settings)
  elif kind == 'pair':
    result = _measure_pair(rest[0].split('+'), int(rest[1]), settings)
  elif kind == 'train' and rest[0] in MODEL_GARDEN_SYSTEMS:
    result = _model_garden_training(rest[0], int(rest[1]), settings)
  elif kind == 'train':
    result = _masklab_training(rest[0], int(rest[1]), settings)
  else:
    raise ValueError(f'unknown job {name!r}')
  result['rss_mib'] = timing.peak_rss_mib()
  result['job_s'] = time.perf_counter() - start
  with open(FLAGS.job_output, 'w') as f:
    json.dump(result, f)


# ------------------------------------------------------------- parent


def _load_store(path):
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return {'jobs': {}, 'failed': {}, 'invocations': []}


def _save_store(store, path):
  from masklab_tf import files
  # Atomic: an interrupted write loses nothing, two writers never mix.
  files.write_json(path, store, indent=1)


def _plan(sizes, systems, skip_assemble):
  """Job names in running order, size by size (the size's peak first), so
  an interrupted run already holds comparable rows."""
  jobs = []
  for size in sizes:
    jobs.append(f'peak-{size}')
    jobs += [f'infer-{system}-{size}' for system in systems]
    jobs += [f"pair-{'+'.join(pair)}-{size}" for pair in PAIRS
             if set(pair) <= set(systems)]
    jobs.append(f'data-{size}')
    jobs += [f'train-{system}-{size}' for system in systems]
  if not skip_assemble:
    jobs.append('assemble')
  return jobs


def _assemble_command(settings):
  command = [sys.executable, os.path.join(REPO, 'benchmarks', 'assemble.py'),
             '--skip_model_cost']
  if settings['quick']:
    command += ['--sizes=64', '--num_runs=1', '--num_warmup=1',
                '--in_graph=1']
  return command


def _run_job(name, settings, work_dir):
  """Runs a job in a subprocess; returns (result or None, error text)."""
  log_path = os.path.join(work_dir, 'logs', f'{name}.log')
  output = os.path.join(work_dir, 'logs', f'{name}.json')
  kind, system, size = (name.split('-') + ['', ''])[:3]
  if name == 'assemble':
    command = _assemble_command(settings)
  elif system in TORCHVISION_SYSTEMS:
    data_dir = os.path.dirname(os.path.dirname(
        _data_prefix(work_dir, int(size), settings['num_images'])))
    command = [FLAGS.torchvision_python,
               os.path.join(REPO, 'benchmarks', 'torchvision_maskrcnn.py'),
               f'--job={kind}', f'--size={size}', f"--runs={settings['runs']}",
               f'--data_dir={data_dir}',
               f"--data_batches={settings['data_batches']}",
               f'--output={output}', *TORCHVISION_SYSTEMS[system]]
  else:
    command = [sys.executable, os.path.abspath(__file__), f'--job={name}',
               f'--job_output={output}', f'--work_dir={work_dir}']
  env = dict(os.environ, SIDE_BY_SIDE_SETTINGS=json.dumps(settings))
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO] + [p for p in [env.get('PYTHONPATH')] if p])
  if os.path.exists(output):
    os.remove(output)
  try:
    with open(log_path, 'w') as log:
      completed = subprocess.run(
          command, stdout=subprocess.PIPE, stderr=log, text=True,
          cwd=REPO, env=env, timeout=FLAGS.job_timeout_s, check=False)
    with open(log_path, 'a') as log:
      log.write(completed.stdout)
  except subprocess.TimeoutExpired:
    return None, f'killed after {FLAGS.job_timeout_s} s'
  if completed.returncode != 0:
    with open(log_path) as f:
      tail = f.read()[-1500:]
    return None, f'exit status {completed.returncode}; log tail:\n{tail}'
  if name == 'assemble':
    shown = ['python', os.path.relpath(command[1], REPO)] + command[2:]
    return {'table': completed.stdout.strip(), 'command': ' '.join(shown)}, ''
  with open(output) as f:
    return json.load(f), ''


def _summary(name, result):
  """One progress line for a finished job."""
  if name.startswith('peak'):
    return (f"float32 {_fmt(_peak_gflops(result, ''), '.0f')}, bfloat16 "
            f"{_fmt(_peak_gflops(result, '_bf16'), '.0f')} GFLOP/s "
            '(best kernel)')
  if name.startswith('infer'):
    return (f"{result['ms_per_image_b1']:.0f} ms/image b1, "
            f"{result['ms_per_image_b4']:.0f} b4, "
            f"{result['flops']['gflops']:.1f} GFLOPs, backbone "
            f"{result['backbone_ms_b1']:.0f} ms, "
            f"{result['rss_mib']:.0f} MiB")
  if name.startswith('train'):
    return (f"{result['s_per_step']:.2f} s/step, tf.data "
            f"{result['data_images_per_s']:.1f} images/s, "
            f"{result['rss_mib']:.0f} MiB, losses "
            f"{', '.join(f'{v:.3g}' for v in result['losses'])}")
  if name.startswith('data'):
    return f"{result['images']} images"
  if name.startswith('pair'):
    return ', '.join(f'{system} {ms:.0f} ms' for system, ms in
                     result['ms_b1'].items()) + ' (b1, interleaved medians)'
  return 'done'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.job:
    _child_main(FLAGS.job)
    return
  unknown = set(FLAGS.systems) - set(SYSTEMS)
  if unknown:
    raise app.UsageError(f'unknown systems {sorted(unknown)}: use '
                         f'{", ".join(SYSTEMS)}')
  if (set(FLAGS.systems) & set(TORCHVISION_SYSTEMS)
      and not FLAGS.torchvision_python):
    raise app.UsageError('the torchvision system needs --torchvision_python '
                         '(an interpreter with torch, torchvision and '
                         'pycocotools)')
  settings = _settings()
  with scratch.work_dir(FLAGS.work_dir, 'masklab_side_by_side_') as work_dir:
    _run_all(settings, os.path.abspath(work_dir))


def _run_all(settings, work_dir):
  """Runs the missing jobs in `work_dir`, prints (and writes) the report."""
  os.makedirs(os.path.join(work_dir, 'logs'), exist_ok=True)
  store_path = os.path.join(work_dir, 'results.json')
  store = _load_store(store_path)
  invocation = len(store['invocations'])
  store['invocations'].append({
      'command': ' '.join(['python', 'benchmarks/side_by_side.py'] +
                          sys.argv[1:]),
      'date': datetime.datetime.now().isoformat(timespec='seconds')})
  _save_store(store, store_path)
  sizes = _sizes()
  for name in _plan(sizes, FLAGS.systems, FLAGS.skip_assemble):
    done = store['jobs'].get(name)
    if done and done['settings'] == settings:
      print(f'{name}: measured before (invocation {done["invocation"]})',
            flush=True)
      continue
    if name.startswith('data-'):
      size = int(name.split('-')[1])
      prefix = _data_prefix(work_dir, size, settings['num_images'])
      pending = [system for system in FLAGS.systems if store['jobs'].get(
          f'train-{system}-{size}', {}).get('settings') != settings]
      # Its categories file is renamed into place last.
      if not pending or os.path.exists(prefix + '.categories.json'):
        continue
    print(f'{name}: running (log {work_dir}/logs/{name}.log)', flush=True)
    start = time.time()
    result, error = _run_job(name, settings, work_dir)
    if result is None:
      print(f'{name}: FAILED after {time.time() - start:.0f} s: {error}',
            flush=True)
      store['failed'][name] = {'settings': settings, 'error': error,
                               'invocation': invocation}
    else:
      print(f'{name}: {time.time() - start:.0f} s; '
            f'{_summary(name, result)}', flush=True)
      store['failed'].pop(name, None)
      if not name.startswith('data-'):
        now = datetime.datetime.now()
        store['jobs'][name] = {'settings': settings, 'result': result,
                               'invocation': invocation,
                               'date': now.date().isoformat(),
                               'time': now.strftime('%H:%M')}
    _save_store(store, store_path)
  report = format_report(store, settings)
  print()
  print(report)
  if FLAGS.write_results:
    write_results(FLAGS.results_path, report)
    print(f'\nwritten to {FLAGS.results_path}')
  failed = [name for name, entry in store['failed'].items()
            if entry['settings'] == settings]
  if failed:
    print(f'\nfailed jobs (rerun the command to retry): {", ".join(failed)}')
    sys.exit(1)


# ------------------------------------------------------------- report


def _fmt(value, spec, suffix=''):
  return '-' if value is None else f'{value:{spec}}{suffix}'


def _peak_gflops(peak, suffix):
  """The best rate of the PEAK_KERNELS ('' float32, '_bf16'), or None."""
  if not peak:
    return None
  rates = [peak.get(f'{kernel}{suffix}_gflops_per_s')
           for kernel in PEAK_KERNELS]
  return max((rate for rate in rates if rate), default=None)


def _job_time(jobs, name):
  """When a job ran (HH:MM), or '-' (not run, or stored before jobs
  recorded their time)."""
  return jobs.get(name, {}).get('time') or '-'


def _version(package):
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def _machine():
  try:
    from benchmarks import machine
  except ImportError:
    import machine
  return machine.describe()


def format_report(store, settings):
  """RESULTS.md's generated part from the jobs measured under `settings`."""
  jobs = {name: entry for name, entry in store['jobs'].items()
          if entry['settings'] == settings}
  result = lambda name: jobs.get(name, {}).get('result')
  rows = []  # (system, size) measured in at least one job
  sizes = sorted({int(name.split('-')[2]) for name in jobs
                  if name.startswith(('infer-', 'train-'))})
  for size in sizes:
    for system in SYSTEMS:
      if result(f'infer-{system}-{size}') or result(
          f'train-{system}-{size}'):
        rows.append((system, size))
  # Each size's rows are read against the peak measured just before them;
  # 'peak' is the one peak of a run made before peaks were per size.
  peaks = {size: result(f'peak-{size}') or result('peak') for size in sizes}
  used = sorted({entry['invocation'] for entry in jobs.values()})
  commands = [store['invocations'][i]['command'] for i in used]
  dates = sorted({entry['date'] for entry in jobs.values()})
  tf_version = next((r['result']['tf_version'] for r in jobs.values()
                     if 'tf_version' in r['result']), _version('tensorflow'))

  lines = [
      '# MaskLab R50 against Model Garden Mask R-CNN R50-FPN',
      '',
      'Written by `benchmarks/side_by_side.py` (the part above the notes '
      'marker is regenerated on every `--write_results`).',
      '',
      '- Command' + ('s' if len(commands) > 1 else '') + ' (results '
      'accumulate in `--work_dir`): ' +
      '; '.join(f'`{c}`' for c in dict.fromkeys(commands)),
      f'- Date: {", ".join(dates) if dates else "-"}',
      f'- Machine: {_machine()}',
      f'- TensorFlow {tf_version}, tf-keras {_version("tf-keras")}, '
      f'tf-models-official {_version("tf-models-official")}; float32 '
      'unless the model says bfloat16, random weights, 80 classes, at most 100 detections; medians of '
      f"{settings['runs']} timed calls after a warm-up"
      + (' (--quick: smoke-test settings, not a benchmark)'
         if settings['quick'] else ''),
  ]
  measured_peaks = [(size, peak) for size, peak in peaks.items() if peak]
  if measured_peaks:
    peak = measured_peaks[0][1]
    per_size = any(result(f'peak-{size}') for size in sizes)
    shapes = ', '.join(peak[f'{kernel}_shape'] for kernel in PEAK_KERNELS
                       if f'{kernel}_shape' in peak)
    lines.append(
        f'- Peak of this machine, same run: the best of {shapes}, in float32 '
        'and in bfloat16 (the peak of the bfloat16 rows); ' +
        ("measured before each size's jobs" if per_size else
         'measured once, before all sizes') + ', table below')
  lines += [
      '',
      '## Speed and memory',
      '',
      '| model | px | inference ms/image, batch 1 | inference ms/image, '
      'batch 4 | training s/step, batch 2 | peak RSS MiB, inference b1 '
      '| b4 | peak RSS MiB, training |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for system, size in rows:
    infer = result(f'infer-{system}-{size}') or {}
    train = result(f'train-{system}-{size}') or {}
    lines.append(
        f'| {SYSTEMS[system]} | {size} '
        f"| {_fmt(infer.get('ms_per_image_b1'), '.0f')} "
        f"| {_fmt(infer.get('ms_per_image_b4'), '.0f')} "
        f"| {_fmt(train.get('s_per_step'), '.2f')} "
        f"| {_fmt(infer.get('rss_mib_b1'), '.0f')} "
        f"| {_fmt(infer.get('rss_mib_b4'), '.0f')} "
        f"| {_fmt(train.get('rss_mib'), '.0f')} |")

  lines += [
      '',
      '## The limit: FLOPs against the machine\'s peak',
      '',
      '| px | measured at | ' + ' | '.join(
          f'{kernel} {precision}' for precision in ('f32', 'bf16')
          for kernel in PEAK_KERNELS) + ' | peak f32 | peak bf16 |',
      '|---:|---|' + '---:|' * (2 * len(PEAK_KERNELS) + 2),
  ]
  for size, peak in measured_peaks:
    lines.append(
        f"| {size} | {_job_time(jobs, f'peak-{size}')} | " + ' | '.join(
            _fmt(peak.get(f'{kernel}{suffix}_gflops_per_s'), '.0f')
            for suffix in ('', '_bf16') for kernel in PEAK_KERNELS) +
        f" | {_fmt(_peak_gflops(peak, ''), '.0f')} "
        f"| {_fmt(_peak_gflops(peak, '_bf16'), '.0f')} |")
  lines += [
      '',
      'GFLOPs per image of the inference graph (batch 1); achieved = '
      'GFLOPs / time per image; % of peak = achieved / peak (the '
      'bfloat16 peak for bfloat16 rows). Backbone: '
      'the ResNet-50 alone (MaskLab: atrous at its output stride; Model '
      'Garden: without the FPN), batch 1. The batch-4 rates take the '
      'batch-1 GFLOPs per image.',
      '',
      '| model | px | GFLOPs/image | peak GFLOP/s | GFLOP/s b1 | % of peak '
      '| GFLOP/s b4 | % of peak | backbone GFLOPs | backbone ms '
      '| backbone GFLOP/s | % of peak | backbone share of b1 time |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for system, size in rows:
    infer = result(f'infer-{system}-{size}')
    if not infer:
      continue
    row_peak = _peak_gflops(peaks[size], _peak_suffix(
        infer['info'].get('precision', '')))
    percent = lambda rate, row_peak=row_peak: (
        None if rate is None or not row_peak else 100 * rate / row_peak)
    gflops = infer['flops']['gflops']
    rate1 = gflops / (infer['ms_per_image_b1'] / 1e3)
    rate4 = gflops / (infer['ms_per_image_b4'] / 1e3)
    backbone = infer['backbone_flops']['gflops']
    backbone_rate = backbone / (infer['backbone_ms_b1'] / 1e3)
    lines.append(
        f'| {SYSTEMS[system]} | {size} | {gflops:.1f} '
        f"| {_fmt(row_peak, '.0f')} | {rate1:.1f} "
        f"| {_fmt(percent(rate1), '.1f', ' %')} | {rate4:.1f} "
        f"| {_fmt(percent(rate4), '.1f', ' %')} | {backbone:.1f} "
        f"| {infer['backbone_ms_b1']:.0f} | {backbone_rate:.1f} "
        f"| {_fmt(percent(backbone_rate), '.1f', ' %')} "
        f"| {100 * infer['backbone_ms_b1'] / infer['ms_per_image_b1']:.0f}"
        ' % |')

  lines += _backbone_peak_lines(result, rows)
  lines += _pair_lines(result, sizes)
  lines += [
      '',
      '## Input pipeline against training',
      '',
      'Each system\'s own tf.data pipeline on the same TFRecords (synthetic '
      'shapes, PNG), timed alone; training images/s = batch 2 / s per step. '
      'A ratio above 1 means the pipeline alone outruns the step; in '
      'training both share the same cores.',
      '',
      '| model | px | batch image shape | tf.data images/s | training '
      'steps/s | training images/s | tf.data / training |',
      '|---|---:|---|---:|---:|---:|---:|',
  ]
  for system, size in rows:
    train = result(f'train-{system}-{size}')
    if not train:
      continue
    images_per_s = TRAIN_BATCH / train['s_per_step']
    lines.append(
        f"| {SYSTEMS[system]} | {size} | {tuple(train['image_shape'])} "
        f"| {train['data_images_per_s']:.1f} "
        f"| {1 / train['s_per_step']:.3f} | {images_per_s:.2f} "
        f"| {train['data_images_per_s'] / images_per_s:.1f} |")

  lines += [
      '',
      '## Details',
      '',
      '| model | px | first inference call s, b1 / b4 | first training step '
      's | detections (image 0, b1) | load average, inference / training '
      '| job s, inference / training | measured at, inference / training |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for system, size in rows:
    infer = result(f'infer-{system}-{size}') or {}
    train = result(f'train-{system}-{size}') or {}
    load = lambda r: ('-' if 'load' not in r else
                      '..'.join(f'{v:.1f}' for v in r['load']))
    lines.append(
        f'| {SYSTEMS[system]} | {size} '
        f"| {_fmt(infer.get('first_call_s_b1'), '.0f')} / "
        f"{_fmt(infer.get('first_call_s_b4'), '.0f')} "
        f"| {_fmt(train.get('first_step_s'), '.0f')} "
        f"| {_fmt(infer.get('detections_b1'), 'd')} "
        f'| {load(infer)} / {load(train)} '
        f"| {_fmt(infer.get('job_s'), '.0f')} / "
        f"{_fmt(train.get('job_s'), '.0f')} "
        f"| {_job_time(jobs, f'infer-{system}-{size}')} / "
        f"{_job_time(jobs, f'train-{system}-{size}')} |")

  lines += ['', '## Models as measured', '']
  for system in SYSTEMS:
    info = next((result(f'{kind}-{system}-{size}')['info']
                 for size in sizes for kind in ('infer', 'train')
                 if result(f'{kind}-{system}-{size}')), None)
    if info:
      # The image size is the rows' px column; an info records the size
      # of the job it came from, which is one of several.
      lines.append(f'- {SYSTEMS[system]}: ' + ', '.join(
          f'{key}={value}' for key, value in info.items()
          if key not in SIZE_KEYS))
  lines += ['', 'FLOPs the profiler does not see (op types it has no count '
            'for, by million output elements, at the largest size; nested '
            'function calls such as XLA clusters hide their bodies):', '']
  for system in SYSTEMS:
    measured = [size for size in sizes if result(f'infer-{system}-{size}')]
    if not measured:
      continue
    flops = result(f'infer-{system}-{measured[-1]}')['flops']
    if system in TORCHVISION_SYSTEMS:
      lines.append(f'- {SYSTEMS[system]}: torch.utils.flop_counter counts '
                   'convolutions and matmuls only (not RoIAlign, NMS)')
      continue
    top = ', '.join(f'{op} ({elements:.1f}M)'
                    for op, elements in flops['uncounted_top'])
    warning = (f"; {flops['unknown_shape_ops']} conv/matmul ops without "
               'static shapes (their FLOPs are missing)'
               if flops['unknown_shape_ops'] else '')
    lines.append(f'- {SYSTEMS[system]}, {measured[-1]} px: {top}{warning}')

  assemble = result('assemble')
  if assemble:
    lines += ['', '## Assembling layer', '',
              f"`{assemble['command']}`", '', assemble['table']]

  failed = [name for name, entry in store['failed'].items()
            if entry['settings'] == settings]
  lines += [
      '',
      '## How it was measured',
      '',
      '- Every job ran in its own process: "peak RSS" is that process\'s '
      'VmHWM (model build included), read after the batch-1 calls and '
      'again after the batch-4 calls for inference, at the end for '
      'training.',
      '- Inference inputs: MaskLab takes uint8 images and normalises in '
      'the graph; Model Garden takes the normalised float images its '
      'parser makes, padded to a multiple of 2^max_level (800 -> 832 px), '
      'and builds its anchors in the graph.',
      '- Training: batches fetched before the timed steps (the step alone);'
      ' MaskLab through `Trainer._train_step`, Model Garden through '
      '`MaskRCNNTask.train_step` (SGD, momentum 0.9, clip norm 10).',
      '- Model Garden keeps its COCO recipe (R50-FPN levels 2-6, 1000 test '
      'proposals, 512 sampled RoIs, 28x28 masks); MaskLab keeps '
      '`configs/masklab_r50_coco.flags` (OS 8 / 16) or '
      '`configs/masklab_r50_fast.flags`. The detection score threshold is '
      f"{settings['model_garden_score_threshold']} for Model Garden (its "
      'default 0.05 drops every box of a random 81-class model).',
  ]
  if any(system in TORCHVISION_SYSTEMS for system, _ in rows):
    lines.append(
        '- torchvision (`benchmarks/torchvision_maskrcnn.py`): eager PyTorch, '
        'random weights, every layer trained with ordinary batch norm (its '
        'default without pretrained weights; the fine-tuning row: frozen '
        'batch norm, stem and layer1, as its builder makes it with ImageNet '
        'weights), score threshold 0 so 100 '
        'detections reach the mask head; training with SGD (lr 0.01, '
        'momentum 0.9; lr 0 for the fine-tuning row, whose identity frozen '
        'batch norm turns random weights NaN after one real step) on the '
        'same PNGs and annotations, decoded in Python '
        '(its "tf.data images/s" is that loader); FLOPs from '
        '`torch.utils.flop_counter`.')
  if failed:
    lines.append(f'- Failed jobs (no numbers): {", ".join(failed)}.')
  return '\n'.join(lines) + '\n'


def _backbone_peak_lines(result, rows):
  """The backbones against the peak kernels timed in the same job, round by
  round (`_backbone_against_peak`)."""
  lines = []
  for system, size in rows:
    infer = result(f'infer-{system}-{size}')
    against = (infer or {}).get('backbone_vs_peak')
    if not against:
      continue
    percents = against['percent_of_peak']
    lines.append(
        f'| {SYSTEMS[system]} | {size} | {len(percents)} '
        f"| {statistics.median(against['backbone_gflops_per_s']):.1f} "
        f"| {statistics.median(against['peak_gflops_per_s']):.0f} "
        f'| {statistics.median(percents):.1f} % '
        f'| {min(percents):.1f}-{max(percents):.1f} % |')
  if not lines:
    return []
  return [
      '',
      'Backbones against the peak in one process: each round times the '
      'backbone (batch 1) and then the peak kernels of its precision back '
      'to back, and % of peak is the round\'s backbone GFLOP/s over its best '
      "kernel's; medians over the rounds (the table above sets jobs run "
      'minutes apart against each other).',
      '',
      '| model | px | rounds | backbone GFLOP/s | peak GFLOP/s '
      '| % of peak | range over rounds |',
      '|---|---:|---:|---:|---:|---:|---|',
      *lines]


def _pair_lines(result, sizes):
  """The interleaved comparisons (`_measure_pair`), GFLOPs from the infer
  jobs of the same systems and size."""
  lines = []
  for pair in PAIRS:
    first, second = pair
    rows = []
    for size in sizes:
      pair_result = result(f"pair-{'+'.join(pair)}-{size}")
      infers = [result(f'infer-{system}-{size}') for system in pair]
      if not pair_result or not all(infers):
        continue
      gflops = [infer['flops']['gflops'] for infer in infers]
      samples = [pair_result['samples_ms'][system] for system in pair]
      rates = [[g / (ms / 1e3) for ms in system_samples]
               for g, system_samples in zip(gflops, samples)]
      medians = [statistics.median(system_rates) for system_rates in rates]
      wins = sum(a >= b for a, b in zip(*rates))
      rows.append(
          f'| {size} | {len(samples[0])} '
          f'| {pair_result["ms_b1"][first]:.0f} '
          f'| {pair_result["ms_b1"][second]:.0f} '
          f'| {medians[0]:.1f} | {medians[1]:.1f} '
          f'| {medians[0] / medians[1]:.2f} | {wins} of {len(samples[0])} |')
    if rows:
      lines += [
          '',
          f'Interleaved in one process, batch 1: {SYSTEMS[first]} against '
          f'{SYSTEMS[second]}, each round timing one call of each back to '
          'back (the rows above were measured minutes apart, and this '
          "machine's speed moves by tens of percent between minutes); "
          'GFLOP/s from the GFLOPs above, medians over the rounds.',
          '',
          f'| px | rounds | {SYSTEMS[first]} ms | {SYSTEMS[second]} ms '
          f'| {SYSTEMS[first]} GFLOP/s | {SYSTEMS[second]} GFLOP/s '
          '| ratio | rounds with the first at least the second |',
          '|---:|---:|---:|---:|---:|---:|---:|---|',
          *rows]
  return lines


def write_results(path, report):
  """Writes the report, keeping an existing file's notes section."""
  notes = DEFAULT_NOTES
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    if NOTES_MARKER in text:
      notes = text[text.index(NOTES_MARKER):]
  from masklab_tf import files
  with files.atomic_write(path) as f:
    f.write(report + '\n' + notes)


if __name__ == '__main__':
  define_flags()
  app.run(main)
