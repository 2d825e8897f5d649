"""Test-time augmentation on one trained checkpoint: pycocotools AP and the
time of each set of passes (postprocess/test_time_augmentation.py).

Every variant scores the same restored model on the same set through the
evaluator (what bin/evaluate --test_scales ... --test_flip runs), each in its
own process: a job of the harness, so a killed run continues from the
variants it has measured (with the same --work_dir). Time: the median of
--runs calls of the results model on the set's first batch after one warm-up
call, per image; the evaluation's wall time, tracing included, beside it.
"""

import dataclasses
import os
import statistics
import time

from absl import app
from absl import flags

from benchmarks.harness import jobs
from benchmarks.harness import results
from benchmarks.harness import suite
from benchmarks.harness import timing

# --variants name -> (scales, flip, box voting).
VARIANTS = {
    'none': ((), False, False),
    'flip': ((), True, False),
    'scales_0.8-1.2': ((0.8, 1.0, 1.2), False, False),
    'scales_0.8-1.2_flip': ((0.8, 1.0, 1.2), True, False),
    'scales_0.8-1.2_flip_voting': ((0.8, 1.0, 1.2), True, True),
    'scales_1-1.5_flip': ((1.0, 1.25, 1.5), True, False),
}
QUICK = {'variants': ['none', 'flip'], 'runs': 1}


def define_flags():
  flags.DEFINE_string('model_dir', None, 'A bin/train directory (its '
                      'configs.json and latest checkpoint).')
  flags.DEFINE_string('annotations', None, 'COCO json of the set scored.')
  flags.DEFINE_string('images', None, 'Its images.')
  flags.DEFINE_list('variants', list(VARIANTS), 'Of: ' + ', '.join(
      f'{name} ({describe(*value)})' for name, value in VARIANTS.items()))
  flags.DEFINE_integer('runs', 3, 'Timed calls per variant.')


def describe(scales, flip, voting) -> str:
  """The bin/evaluate flags of a variant."""
  words = [f'--test_scales={",".join(f"{x:g}" for x in scales)}'] * bool(
      scales) + ['--test_flip'] * flip + ['--test_box_voting'] * voting
  return ' '.join(words) or 'one pass'


def run_job(job: jobs.Job, s: dict, work_dir: str) -> dict:
  """One variant (job.system) on the checkpoint `s` names."""
  del work_dir
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from masklab_tf import config
  from masklab_tf.evaluation import evaluator as evaluator_lib
  from masklab_tf.modeling import factory
  from masklab_tf.postprocess import image_results
  from masklab_tf.postprocess import test_time_augmentation as tta
  configs = config.from_json(os.path.join(s['model_dir'],
                                          config.CONFIGS_FILE))
  inference_model = factory.restore_models(
      configs, s['checkpoint']).inference_model
  scales, flip, voting = VARIANTS[job.system]
  configs = configs._replace(data=dataclasses.replace(
      configs.data, test_scales=scales, test_flip=flip,
      test_box_voting=voting))
  evaluator = evaluator_lib.Evaluator(configs, s['annotations'], s['images'])
  start = time.perf_counter()
  metrics = evaluator.run(inference_model)
  wall = time.perf_counter() - start
  settings = tta.settings(configs)
  model = image_results.build_results_model(
      inference_model, full_image_masks=True,
      padding_multiple=evaluator.padding_multiple, test_time=settings)
  call = tf.function(lambda x: model(x, training=False), autograph=False)
  batch = next(iter(evaluator.batches))
  inputs = {k: batch[k] for k in model.input_names}
  run = lambda: {k: v.numpy() for k, v in call(inputs).items()}  # noqa: E731
  run()
  seconds = statistics.median(timing.seconds(run, ()) for _ in
                              range(s['runs']))
  row = {'variant': describe(scales, flip, voting),
         'images': len(evaluator.dataset.records),
         'mask_head': configs.model.mask_head,
         'eval_min_size': configs.data.eval_min_size,
         'passes': len(scales or (1,)) * (2 if flip else 1),
         'ms_per_image': 1000 * seconds / int(batch['image'].shape[0]),
         'eval_s': wall,
         **{f'{kind}_ap{at}': metrics[kind][f'AP{at}']
            for kind in ('box', 'mask') for at in ('', '50', '75')}}
  print(row, flush=True)
  return row


def main(argv):
  del argv
  s = {name: suite.chosen(name, QUICK) for name in
       ('model_dir', 'annotations', 'images', 'variants', 'runs')}
  unknown = set(s['variants']) - set(VARIANTS)
  if unknown:
    raise app.UsageError(f'--variants: not one of {", ".join(VARIANTS)}: '
                         f'{", ".join(sorted(unknown))}')
  if not (s['model_dir'] and s['annotations'] and s['images']):
    raise app.UsageError('--model_dir, --annotations and --images name the '
                         'checkpoint and the set')
  variants = s.pop('variants')
  s = {**{k: os.path.abspath(v) if isinstance(v, str) else v
          for k, v in s.items()},
       'checkpoint': _latest_checkpoint(s['model_dir'])}
  suite.run('test_time', [jobs.Job('tta', name) for name in variants], s,
            lambda store, settings, _: report(store, settings, variants),
            summary=lambda job, r: f'mask AP {r["mask_ap"]:.1f}, '
            f'{r["ms_per_image"]:.0f} ms / image')


def _latest_checkpoint(model_dir: str) -> str:
  """The checkpoint a run scores; a new one is a new set of jobs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  checkpoint = tf.train.latest_checkpoint(model_dir)
  if not checkpoint:
    raise app.UsageError(f'--model_dir: no checkpoint in {model_dir}')
  return checkpoint


def report(store: jobs.Store, s: dict, variants: list[str]) -> dict:
  """The variants' table, in --variants order, of what the store holds."""
  measured = [store.result(jobs.Job('tta', name), s) for name in variants]
  measured = [row for row in measured if row]
  first = measured[0] if measured else {}
  column = results.column
  columns = [
      column('variant', 'passes merged'), column('passes', 'passes', 'd'),
      *(column(f'{kind}_ap{at}', f'{kind} AP{at}', '.1f')
        for kind in ('mask', 'box') for at in ('', '50', '75')),
      column('ms_per_image', 'ms / image', '.0f'),
      column('eval_s', 'eval s', '.0f')]
  return results.new('test_time', 'Test-time augmentation', [
      results.text(
          f'Checkpoint `{os.path.basename(s["checkpoint"])}` of '
          f'{results.relative_paths(s["model_dir"])} '
          f'(--mask_head={first.get("mask_head")}, eval size '
          f'{first.get("eval_min_size")}), scored on {first.get("images")} '
          f'images of {results.relative_paths(s["annotations"])} through '
          'the evaluator (what `bin/evaluate --test_scales ... --test_flip` '
          'runs), each variant in its own process. ms / image: median of '
          'calls on the first eval batch after a warm-up; eval s: the whole '
          'evaluation, tracing included.'),
      results.table('variants', columns, [
          {spec['key']: row[spec['key']] for spec in columns}
          for row in measured])],
      {**results.without_machine_paths(s), 'variants': variants})
