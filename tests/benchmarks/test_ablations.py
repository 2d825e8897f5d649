"""The ablations suite: every row's flags are real settings, each table's
rows exist, the report's mean and spread, runs carried over from the
published result, and a quick run to the end."""

import json

import os
import subprocess
import sys

import pytest

from benchmarks.harness import jobs
from benchmarks.harness import results
from benchmarks.suites import ablations
from benchmarks.suites import accuracy
from masklab_tf import config

SETTINGS = {'budget_s': 10.0, 'budget_mode': 'cpu', 'num_train': 8,
            'num_val': 8, 'data_seed': 1, 'config': 'configs/shapes_cpu.flags',
            'data_dir': ''}


@pytest.mark.parametrize('name', list(ablations.ROWS))
def test_every_row_is_a_config_that_differs_from_the_baseline(name):
  """The flags parse (a renamed flag fails here, not after an hour), and
  each row but the baseline changes the config or the pretraining."""
  row = ablations.ROWS[name]
  path = os.path.join(results.REPO, SETTINGS['config'])
  configs = config.from_flagfile(path, accuracy.DENSE_SEMANTIC + row.flags)
  baseline = config.from_flagfile(path, accuracy.DENSE_SEMANTIC)
  assert bool(configs != baseline or row.pretrain) is (name != 'baseline')
  assert 0 <= row.pretrain < 1


def test_every_table_names_rows_that_exist():
  for table in ablations.TABLES.values():
    assert set(table.rows) <= set(ablations.ROWS)
    assert set(table.paper) <= set(table.rows)
  assert {n for table in ablations.TABLES.values() for n in table.rows} == (
      set(ablations.ROWS))


def _outcome(name, mask_ap, steps=100):
  row = ablations.ROWS[name]
  metrics = {kind: {f'AP{at}': mask_ap for at in ('', '50', '75')}
             for kind in ('mask', 'box')}
  outcome = {'flags': list(row.flags), 'pretrain': row.pretrain,
             'steps': steps, 'metrics': metrics}
  if row.pretrain:
    outcome['pretraining'] = {'steps': 40,
                              'metrics': {'semantic': {'mIoU': 50.0}}}
  return outcome


def test_report_gives_each_rows_mean_and_spread_and_skips_stale_rows(
    tmp_path):
  store = jobs.Store(str(tmp_path / 'results.json'))
  record = lambda name, seed, outcome: store.record(
      jobs.Job('ablation', f'{name}-seed{seed}'), SETTINGS,
      jobs.Outcome(outcome))
  for seed, ap in enumerate([50.0, 54.0, 58.0]):
    record('baseline', seed, _outcome('baseline', ap))
  record('seg_0.25', 0, _outcome('seg_0.25', 60.0))
  stale = dict(_outcome('bins_2', 10.0), flags=['--num_distance_bins=3'])
  record('bins_2', 0, stale)
  store.record(jobs.Job('ablation', 'bins_1-seed0'),
               dict(SETTINGS, budget_s=20.0),
               jobs.Outcome(_outcome('bins_1', 10.0)))
  result = ablations.report(store, SETTINGS)
  table = results.find_table(result, 'seg')
  baseline, seg = table['rows']
  assert baseline['mask_ap'] == 54.0 and baseline['mask_ap_sd'] == 4.0
  assert baseline['seeds'] == 3 and 'pretrain_steps' not in baseline
  assert seg['pretrain_steps'] == 40 and seg['pretrain_miou'] == 50.0
  # The paper has no pretraining-fraction table: no paper number beside the
  # baseline here, though it has one in Tables 2-4.
  assert baseline['paper_ap75'] is None
  assert 'mask_ap_sd' not in seg  # One seed: no spread.
  assert result['command'] == (
      'python -m benchmarks ablations --rows=baseline --seeds=0,1,2 '
      '--budget_mode=cpu --budget_s=10 ; python -m benchmarks ablations '
      '--rows=seg_0.25 --seeds=0 --budget_mode=cpu --budget_s=10')
  # The baseline is table2-4's reference, but alone it is no table:
  # table3's other rows are stale (bins_2: other flags) or of other
  # settings (bins_1).
  with pytest.raises(KeyError):
    results.find_table(result, 'table3')
  with pytest.raises(KeyError):
    results.find_table(result, 'table6')  # Nothing of it measured.


def test_a_fresh_work_folder_continues_from_the_published_runs(tmp_path):
  """The runs kept in the published result are adopted (those measured
  under these settings), reported, and kept again; nothing is trained."""
  settings = {'budget_steps': 1000, 'budget_mode': 'steps',
              'num_train': 2000, 'num_val': 200, 'data_seed': 1,
              'config': 'configs/shapes_cpu.flags', 'data_dir': ''}
  kept = {
      'ablation-baseline-seed0': _entry(settings, _outcome('baseline', 50.0)),
      'ablation-baseline-seed1': _entry(settings, dict(
          _outcome('baseline', 60.0),
          initialised='resumed from /work/me/ckpt-9 at step 9 (every '
          'weight: /work/me/init_checkpoint.json)')),
      'ablation-semantic_only-seed0': _entry(
          settings, _outcome('semantic_only', 40.0)),
      'ablation-bins_1-seed0': _entry(dict(settings, budget_steps=1),
                                      _outcome('bins_1', 10.0))}
  published = results.path('ablations', 'kept', str(tmp_path / 'results'))
  os.makedirs(os.path.dirname(published))
  with open(published, 'w') as f:
    json.dump(dict(results.new('ablations', 'kept', []), jobs=kept), f)
  run = subprocess.run(
      [sys.executable, '-m', 'benchmarks', 'ablations', '--report_only',
       f'--work_dir={tmp_path}/work', '--publish=kept',
       f'--results_dir={tmp_path}/results'],
      check=True, cwd=results.REPO, env=dict(
          os.environ, PYTHONPATH=results.REPO), capture_output=True,
      text=True)
  assert 'carried from the published result: 3 jobs' in run.stdout
  result = results.load_all(str(tmp_path / 'results'))['ablations/kept']
  semantic_only, baseline = results.find_table(result, 'table2')['rows']
  assert semantic_only['mask_ap'] == 40.0
  assert baseline['row'] == 'baseline' and baseline['mask_ap'] == 55.0
  # Beside the baseline (refinement from conv1 and res2), the paper's
  # conv1 + conv2 row, not its Table 2 row (measured without refinement).
  assert (baseline['paper_ap50'], baseline['paper_ap75']) == (53.26, 33.89)
  # The command that measures what is reported, not the one that reported.
  assert result['command'] == (
      'python -m benchmarks ablations --rows=baseline --seeds=0,1 '
      '--budget_steps=1000 ; python -m benchmarks ablations '
      '--rows=semantic_only --seeds=0 --budget_steps=1000')
  assert sorted(result['jobs']) == ['ablation-baseline-seed0',
                                    'ablation-baseline-seed1',
                                    'ablation-semantic_only-seed0']
  # Kept runs name no folder of the machine that measured them.
  assert result['jobs']['ablation-baseline-seed1']['result'][
      'initialised'] == ('resumed from <ckpt-9> at step 9 (every weight: '
                         '<init_checkpoint.json>)')


def _entry(settings, outcome):
  return {'settings_hash': jobs.settings_hash(settings),
          'settings': settings, 'result': outcome}


@pytest.mark.slow
def test_quick_run_to_the_end(tmp_path):
  """`python -m benchmarks ablations --quick` of a pretraining row."""
  subprocess.run(
      [sys.executable, '-m', 'benchmarks', 'ablations', '--quick',
       '--tables=seg', '--rows=seg_0.25', f'--work_dir={tmp_path}/work',
       '--publish=quick', f'--results_dir={tmp_path}/results'],
      check=True, cwd=results.REPO, env=dict(
          os.environ, PYTHONPATH=results.REPO), capture_output=True)
  published = results.load_all(str(tmp_path / 'results'))['ablations/quick']
  row, = results.find_table(published, 'seg')['rows']
  # Steps mode: the whole schedule, and a quarter of it pretraining first.
  assert row['row'] == 'seg_0.25' and row['steps'] == 4
  assert row['pretrain_steps'] == 1
  assert 0 <= row['pretrain_miou'] <= 100 and 'mask_ap' in row
