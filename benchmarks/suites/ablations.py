"""The paper's ablation tables (MaskLab Tables 2-6) at small scale, and the
semantic-segmentation pretraining at one total budget.

Every row is MaskLab as the accuracy suite trains it (--config, default
configs/shapes_cpu.flags, with the dense semantic loss), with the flags of
its row, trained from scratch on the hard shapes set and scored on its val
split with pycocotools. Rows run once per --seeds (the spread tells a
difference from noise).

The budget is a number of steps (--budget_mode=steps, the default): every
row runs the same cosine schedule, as the paper's ablations share one, and
a run means the same on every machine, so rows measured in different
sessions on different CPUs form one table (a CPU-time budget gives a Xeon
three times the steps of a Zen 3). A row with a pretraining fraction f
first trains the semantic-segmentation stage (--mask_head=semantic_
segmentation) for f times that many steps, then MaskLab initialised from it
(--init_checkpoint) for the whole schedule: the paper's protocol. With a
time budget (--budget_mode=cpu or wall, the `seg` table's first
measurement) f is instead a part of the one budget, so that a row costs
what the others do.

What the small scale cannot reproduce is said in the rows' notes: ResNet-10
has one unit in res5 and in the box classifier's conv5, so the multi-grid
rates (one per unit) act only from ResNet-18 on (Table 5 runs there), and
there is no ImageNet checkpoint to initialise the box classifier from
(Table 6 "BC").
"""

from __future__ import annotations

import collections
import os
import statistics
import types
from typing import Mapping, NamedTuple

from absl import app
from absl import flags

from benchmarks.harness import jobs
from benchmarks.harness import results
from benchmarks.harness import scratch
from benchmarks.harness import suite
from benchmarks.suites import accuracy

FLAGS = flags.FLAGS


class Row(NamedTuple):
  """One row: the flags it adds to --config, what it is, the part of the
  budget spent pretraining, and the paper's mAP@0.5 / mAP@0.75 (None where
  the paper has no such row)."""
  flags: tuple[str, ...]
  label: str
  pretrain: float = 0.0
  paper: tuple[float | None, float | None] = (None, None)


# Table 6's chain starts from shapes_cpu without scale augmentation (one
# training size) and adds, as the paper does, one change per row.
_CHAIN_BASE = ('--min_sizes=160',)
# "Anc": the paper's input 600 -> 800 px and a fifth anchor scale.
_LARGER_INPUT = ('--min_sizes=208', '--eval_min_size=208', '--max_size=208',
                 '--anchor_sizes=8,16,32,64,128')
# "RS": the paper's {480, ..., 930} around 800, scaled to 208.
_SCALE_AUGMENTATION = ('--min_sizes=128,160,184,208,240', '--max_size=240')
# Table 5 runs on ResNet-18: two units in res5 and in the box classifier's
# conv5, so the first two rates of each of the paper's triples act.
_RESNET18 = ('--backbone_depth=18',)
# The pretraining Table 6's "Seg" rows add: a quarter of the MaskLab steps
# (as stage steps cost about half a MaskLab step, an eighth more compute).
SEG_FRACTION = 0.25

ROWS = {
    # The paper's conv1 + conv2 refinement row of Table 4.
    'baseline': Row((), 'semantic + direction, 4 distance bins, 8 '
                    'directions, conv1 + res2 refinement (shapes_cpu)',
                    paper=(53.26, 33.89)),
    # Table 2.
    'semantic_only': Row(('--mask_head=masklab_semantic_only',),
                         'semantic only', paper=(48.41, 24.44)),
    'direction_only': Row(('--mask_head=masklab_direction_only',
                           '--num_distance_bins=1'),
                          'direction only (1 bin)', paper=(50.21, 27.40)),
    'bins_1': Row(('--num_distance_bins=1',), 'semantic + direction, 1 bin',
                  paper=(51.83, 29.72)),
    # Table 3 (paper at 4 bins: 8 directions 54.13 / 34.82).
    'bins_2': Row(('--num_distance_bins=2',), '2 distance bins'),
    'directions_2': Row(('--num_directions=2',), '2 directions',
                        paper=(53.51, 33.80)),
    'directions_4': Row(('--num_directions=4',), '4 directions',
                        paper=(53.85, 34.39)),
    'directions_6': Row(('--num_directions=6',), '6 directions',
                        paper=(54.10, 34.86)),
    # Table 4; no refinement is also Table 2's both-features, 4-bin row.
    'refine_none': Row(('--refine=false',), 'no refinement',
                       paper=(52.26, 30.57)),
    'refine_conv1': Row(('--refine_features=conv1',), 'conv1',
                        paper=(52.68, 32.92)),
    'refine_res2': Row(('--refine_features=res2',), 'res2'),
    'refine_res3': Row(('--refine_features=conv1,res2,res3',),
                       'conv1 + res2 + res3', paper=(52.55, 32.88)),
    # Semantic-segmentation pretraining at one total budget (item 1).
    **{f'seg_{f:g}': Row((), f'semantic-segmentation pretraining {f:g}', f)
       for f in (0.1, 0.25, 0.5)},
    # Table 5 (mAP@0.75 only), ResNet-18: box classifier x sem/dir rates.
    **{f'mg_box{box}_res5{res5}': Row(
        _RESNET18 + (f'--box_classifier_multigrid={box[0]},{box[1]}',
                     f'--backbone_multigrid={res5[0]},{res5[1]}'),
        f'ResNet-18, box classifier ({box[0]}, {box[1]}), res5 '
        f'({res5[0]}, {res5[1]})', paper=(None, p75))
       for box, res5, p75 in (('11', '11', 34.82), ('12', '11', 35.59),
                              ('11', '12', 35.07), ('12', '12', 35.60))},
    # Table 6's chain (paper BC 54.13 / 34.82 stands before Seg).
    'chain_base': Row(_CHAIN_BASE, 'one training size (no RS)',
                      paper=(53.26, 33.89)),
    'chain_seg': Row(_CHAIN_BASE, '+ Seg', SEG_FRACTION,
                     paper=(55.03, 35.91)),
    'chain_anc': Row(_CHAIN_BASE + _LARGER_INPUT, '+ Anc (208 px, 5 anchor '
                     'sizes)', SEG_FRACTION, paper=(57.44, 37.57)),
    'chain_dc': Row(_CHAIN_BASE + _LARGER_INPUT + ('--deformable_crop',),
                    '+ DC', SEG_FRACTION, paper=(58.69, 38.61)),
    'chain_rs': Row(_LARGER_INPUT + _SCALE_AUGMENTATION +
                    ('--deformable_crop',), '+ RS', SEG_FRACTION,
                    paper=(60.55, 40.41)),
}


class Table(NamedTuple):
  """A paper table: its title, its rows, and the paper's numbers of rows it
  shares with other tables where this table's differ from the row's own.

  The paper's ablations are points of one chain of changes (its Table 2 is
  measured without refinement, its Table 3 after the box classifier's
  ImageNet initialisation), so a row such as the baseline stands beside a
  different paper number in each table."""
  title: str
  rows: list[str]
  # Read-only: a NamedTuple's default is one object shared by every Table.
  paper: Mapping[str, tuple[float | None, float | None]] = (
      types.MappingProxyType({}))


TABLES = {
    # The paper's Table 2 has no refinement: its both-features row is
    # refine_none; the feature rows here keep the baseline's refinement.
    'table2': Table('Table 2: semantic and direction features',
                    ['semantic_only', 'direction_only', 'bins_1',
                     'refine_none', 'baseline']),
    # The paper's Table 3 adds BC (its 8-direction row is Table 6's BC row);
    # it has no rows of distance bins (Table 2 has 1 against 4).
    'table3': Table('Table 3: directions and distance bins',
                    ['directions_2', 'directions_4', 'directions_6',
                     'baseline', 'bins_1', 'bins_2'],
                    {'baseline': (54.13, 34.82), 'bins_1': (None, None)}),
    'table4': Table('Table 4: mask refinement',
                    ['refine_none', 'refine_conv1', 'refine_res2',
                     'baseline', 'refine_res3']),
    'seg': Table('Semantic-segmentation pretraining at one total budget',
                 ['baseline', 'seg_0.1', 'seg_0.25', 'seg_0.5'],
                 {'baseline': (None, None)}),
    'table5': Table('Table 5: multi-grid rates (ResNet-18)',
                    [name for name in ROWS if name.startswith('mg_')]),
    'table6': Table('Table 6: the chain of levers',
                    ['chain_base', 'chain_seg', 'chain_anc', 'chain_dc',
                     'chain_rs']),
}
QUICK = {'num_train': 8, 'num_val': 8, 'budget_steps': 4, 'budget_s': 10.0,
         'seeds': ['0']}
METRICS = tuple((f'{kind}_ap{at}', kind, f'AP{at}')
                for kind in ('mask', 'box') for at in ('', '50', '75'))


def define_flags() -> None:
  flags.DEFINE_list('tables', list(TABLES), f'Of: {", ".join(TABLES)}.')
  flags.DEFINE_list('rows', [], 'Only these rows of --tables (default: all '
                    'of them).')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds of each row.')
  flags.DEFINE_bool('report_only', False, 'Train nothing: report (and '
                    'with --publish, publish) what is measured.')
  flags.DEFINE_enum('budget_mode', 'steps', ['steps', 'cpu', 'wall'],
                    'MaskLab steps per run (pretraining added), or process '
                    'CPU seconds (robust to other work on the machine) or '
                    'wall-clock seconds per run (pretraining included).')
  flags.DEFINE_integer('budget_steps', 1000, 'With --budget_mode=steps.')
  flags.DEFINE_float('budget_s', 1500.0, 'With --budget_mode=cpu or wall.')
  flags.DEFINE_string('data_dir', '', 'Hard shapes set; generated if '
                      'missing.')
  flags.DEFINE_integer('num_train', 2000, 'Training images to generate.')
  flags.DEFINE_integer('num_val', 200, 'Val images to generate.')
  flags.DEFINE_integer('data_seed', 1, 'Seed of the generated set.')
  flags.DEFINE_string('config', 'configs/shapes_cpu.flags',
                      'The flags file every row starts from.')


def run_job(job: jobs.Job, settings: dict, work_dir: str) -> dict:
  """Trains row `job.system` ('<row>-seed<S>') to the budget; scores it."""
  name, seed = job.system.rsplit('-seed', 1)
  row = ROWS[name]
  data = accuracy.shapes_data(settings, work_dir)
  model_dir = os.path.join(work_dir, 'models', job.system)
  print(f'earlier run set aside: {scratch.set_aside(model_dir)}', flush=True)
  run = dict(settings, seed=int(seed), dense_semantic_loss=True,
             deterministic=False)
  mode = settings['budget_mode']
  if mode == 'steps':
    stage_budget = max(1, round(row.pretrain * settings['budget_steps']))
    masklab_budget = settings['budget_steps']
  else:
    stage_budget = row.pretrain * settings['budget_s']
    masklab_budget = (1 - row.pretrain) * settings['budget_s']
  schedule = lambda steps: (f'--train_steps={steps}',) * (mode == 'steps')
  result, init = {'flags': list(row.flags), 'pretrain': row.pretrain}, ()
  if row.pretrain:
    from masklab_tf.evaluation import evaluator as evaluator_lib
    stage_dir = os.path.join(model_dir, 'semantic_segmentation')
    configs = accuracy.configs_for(
        run, data, *row.flags, '--mask_head=semantic_segmentation',
        *schedule(stage_budget))
    trainer, stage = accuracy.train_to_budget(configs, stage_dir,
                                              stage_budget, mode)
    stage['metrics'] = evaluator_lib.Evaluator(
        configs, f'{data}/val/annotations.json', f'{data}/val/images').run(
            trainer.models.inference_model)
    result['pretraining'] = stage
    init = (f'--init_checkpoint={stage_dir}',)
  configs = accuracy.configs_for(run, data, *row.flags, *init,
                                 *schedule(masklab_budget))
  masklab_dir = os.path.join(model_dir, 'masklab')
  trainer, trained = accuracy.train_to_budget(configs, masklab_dir,
                                              masklab_budget, mode)
  scores = accuracy.score(configs, trainer.models.inference_model, data,
                          masklab_dir)
  return {**result, **trained, **scores}


def _row_values(name: str, outcomes: list[dict], table: Table) -> dict:
  """Mean (and sample standard deviation over seeds) of a row's runs, and
  the paper's numbers of that row in `table`."""
  row = ROWS[name]
  paper = table.paper.get(name, row.paper)
  values = {'row': name, 'what': row.label, 'seeds': len(outcomes),
            'steps': round(statistics.mean(o['steps'] for o in outcomes)),
            'paper_ap50': paper[0], 'paper_ap75': paper[1]}
  if row.pretrain:
    values['pretrain_steps'] = round(statistics.mean(
        o['pretraining']['steps'] for o in outcomes))
    values['pretrain_miou'] = statistics.mean(
        o['pretraining']['metrics']['semantic']['mIoU'] for o in outcomes)
  for key, kind, metric in METRICS:
    scores = [o['metrics'][kind][metric] for o in outcomes]
    values[key] = statistics.mean(scores)
    if len(scores) > 1:
      values[f'{key}_sd'] = statistics.stdev(scores)
  return values


COLUMNS = [
    results.column('row', 'row'), results.column('what', 'what'),
    results.column('seeds', 'seeds', 'd'),
    results.column('steps', 'MaskLab steps', 'd'),
    results.column('pretrain_steps', 'pretraining steps', 'd'),
    results.column('pretrain_miou', 'pretrained mIoU', '.1f'),
    *(spec for key, kind, metric in METRICS for spec in (
        results.column(key, f'{kind} {metric}', '.1f'),
        results.column(f'{key}_sd', '±', '.1f'))),
    results.column('paper_ap50', 'paper mAP@0.5', '.2f'),
    results.column('paper_ap75', 'paper mAP@0.75', '.2f')]


def report(store: jobs.Store, settings: dict) -> dict:
  """One table per paper table, of every row the store holds under
  `settings` (all its seeds; stale rows, whose flags changed since, are left
  out)."""
  if settings['budget_mode'] == 'steps':
    budget = ('{budget_steps} MaskLab steps per run, one cosine schedule '
              '(a row with pretraining trains the semantic-segmentation '
              'stage for its fraction of that many steps first)')
  else:
    budget = ('{budget_s:g} {budget_mode} s of training per run '
              '(pretraining included)')
  body = [results.text(
      (budget + ', --config={config} with the dense semantic loss, on the '
       'hard shapes set ({num_train} train images, seed {data_seed}), '
       'scored on its {num_val} val images; mean over the seeds, ± their '
       'sample standard deviation. The paper\'s numbers are COCO mAP^r at '
       'IoU 0.5 and 0.75 (ResNet-101, 800 px).').format(**settings))]
  runs, seeds, machines = {}, {}, collections.Counter()
  for name, entry in sorted(store.measured(settings).items()):
    row, seed = jobs.Job.parse(name).system.rsplit('-seed', 1)
    outcome = entry['result']
    if (row in ROWS and outcome['flags'] == list(ROWS[row].flags)
        and outcome['pretrain'] == ROWS[row].pretrain):
      runs.setdefault(row, []).append(outcome)
      seeds.setdefault(row, []).append(seed)
      machines[entry.get('machine', 'machine not recorded')] += 1
  if machines:
    body.append(results.text('Runs made on: ' + '; '.join(
        f'{machine} ({n})' for machine, n in machines.most_common()) + '.'))
  for table_id, table in TABLES.items():
    values = [_row_values(name, runs[name], table) for name in table.rows
              if name in runs]
    if any(v['row'] != 'baseline' for v in values):  # not the reference alone
      used = {key for v in values for key in v}
      body.append(results.table(table_id, [c for c in COLUMNS
                                           if c['key'] in used], values,
                                title=table.title))
  return results.new('ablations', 'The paper\'s ablations at small scale',
                     body, settings, argv=_command(seeds, settings))


def _command(seeds: dict[str, list[str]], settings: dict) -> list[str]:
  """The arguments that measure the rows of `seeds` ({row: its seeds}):
  one command per set of seeds, joined by ';' (the runs came from many
  invocations, perhaps on many machines)."""
  budget = ([f'--budget_steps={settings["budget_steps"]}']
            if settings['budget_mode'] == 'steps' else
            [f'--budget_mode={settings["budget_mode"]}',
             f'--budget_s={settings["budget_s"]:g}'])
  by_seeds = {}
  for row, row_seeds in seeds.items():
    by_seeds.setdefault(','.join(sorted(row_seeds, key=int)), []).append(row)
  argv = []
  for row_seeds, rows in by_seeds.items():
    if argv:
      argv += [';', 'python', '-m', 'benchmarks']
    argv += ['ablations', f'--rows={",".join(rows)}', f'--seeds={row_seeds}',
             *budget]
  return argv or ['ablations', '--report_only']


def main(argv) -> None:
  del argv
  unknown = set(FLAGS.tables) - set(TABLES)
  unknown_rows = set(FLAGS.rows) - set(ROWS)
  if unknown or unknown_rows:
    raise app.UsageError(f'--tables of {list(TABLES)}; --rows of '
                         f'{list(ROWS)}')
  seeds = suite.chosen('seeds', QUICK)
  plan = {table: {name: seeds for name in TABLES[table].rows
                  if not FLAGS.rows or name in FLAGS.rows}
          for table in FLAGS.tables}
  budget = ('budget_steps' if FLAGS.budget_mode == 'steps' else 'budget_s')
  settings = {name: suite.chosen(name, QUICK) for name in (
      budget, 'budget_mode', 'num_train', 'num_val', 'data_seed', 'config')}
  settings['data_dir'] = FLAGS.data_dir and os.path.abspath(FLAGS.data_dir)
  names = [] if FLAGS.report_only else list(dict.fromkeys(
      f'{name}-seed{seed}' for rows in plan.values()
      for name, row_seeds in rows.items() for seed in row_seeds))
  suite.run('ablations', [jobs.Job('ablation', n) for n in names], settings,
            lambda store, settings, _: report(store, settings),
            summary=lambda job, r: (
                f'{r["steps"]} steps, mask AP {r["metrics"]["mask"]["AP"]:.1f}'),
            keep_jobs=True)
