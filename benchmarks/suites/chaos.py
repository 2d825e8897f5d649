"""Training SIGKILLed at random moments loses nothing: bin/train (tiny
model, a checkpoint every 2 steps) is killed --kills times, half while a
checkpoint is written; each time a fresh process must restore "latest" at
the last step reported (or one before) and the restart resume there; then
the run trains to its end. Exits 1 on any loss."""

from __future__ import annotations

import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

from absl import flags

from benchmarks.harness import results
from benchmarks.harness import scratch
from benchmarks.harness import suite
from masklab_tf.data import synthetic

FLAGS = flags.FLAGS
TINY = ('--backbone_depth=10 --rpn_head_channels=32 --num_proposals=30 '
        '--test_num_proposals=30 --rpn_pre_nms_top_k=300 --num_sampled_rois=8 '
        '--hypercolumn_channels=8 --refine_filters=16 --max_detections=5 '
        '--min_sizes=96 --eval_min_size=96 --max_size=96 --batch_size=2 '
        '--log_every=1 --checkpoint_every=2 --keep_checkpoints=2 '
        '--warmup_steps=5').split()
STEP_LINE = re.compile(r'^step (\d+)/\d+  loss ([0-9.]+)', re.MULTILINE)
RESUMED = re.compile(r'resumed from (\S+) at step (\d+)')
LATEST = """import sys, tensorflow as tf
path = tf.train.latest_checkpoint(sys.argv[1])
names = [n for n, _ in tf.train.list_variables(path)] if path else []
print([int(tf.train.load_checkpoint(path).get_tensor(n)) for n in names
       if n.startswith('step/')][0] if path else 0)"""
QUICK = {'kills': 2, 'train_steps': 12}
COLUMNS = [results.column(key, key.replace('_', ' '), fmt) for key, fmt in (
    ('kill', 'd'), ('how', None), ('resumed_at', 'd'), ('reached', 'd'),
    ('latest_restores_at', 'd'), ('steps_lost', 'd'),
    ('loss_before_kill', '.3f'), ('loss_after_resume', '.3f'))]


def define_flags() -> None:
  flags.DEFINE_integer('kills', 10, 'SIGKILLs to inject.')
  flags.DEFINE_integer('train_steps', 60, 'Steps the run must complete.')
  flags.DEFINE_integer('seed', 0, 'Seed of the kill moments.')


def latest_step(model_dir: str) -> int:
  """The step "latest" restores at in a fresh process (0: none); raises
  when it does not restore, the failure hunted."""
  check = subprocess.run([sys.executable, '-c', LATEST, model_dir],
                         capture_output=True, text=True, timeout=300)
  if check.returncode != 0:
    raise RuntimeError(f'{model_dir}: latest does not load:\n{check.stderr}')
  return int(check.stdout.split()[-1])


def saving(model_dir: str) -> bool:
  """Whether a checkpoint is being written (TF's temporary files exist)."""
  return os.path.isdir(model_dir) and any(
      '_temp' in name or name.endswith('.tmp') for name in os.listdir(
          model_dir))


def run_until_killed(command, log_path, model_dir, rng, during_save):
  """Starts training and kills it; returns (its output lines, how)."""
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
  started, how = time.time(), 'finished before the kill'
  while process.poll() is None and not STEP_LINE.search(
      pathlib.Path(log_path).read_text()):
    time.sleep(0.2)  # import and tracing first
  deadline = time.time() + rng.uniform(0.5, 8.0) + 30 * during_save
  while process.poll() is None:
    if during_save and saving(model_dir):
      how = 'during a checkpoint write'
    elif time.time() >= deadline:
      how = ('at a random moment ' + ('(no save seen)' if during_save else
                                      f'({time.time() - started:.1f} s in)'))
    else:
      time.sleep(0.005)
      continue
    process.send_signal(signal.SIGKILL)
    break
  process.wait()
  with open(log_path) as f:
    return f.read().splitlines(), how


def chaos(run_dir: str, kills: int, train_steps: int) -> tuple[list, bool]:
  """The kills and their checks in `run_dir`: (rows, final run done)."""
  synthetic.make_shapes(f'{run_dir}/data', num_train=16, num_val=4, seed=0)
  model_dir, rng = f'{run_dir}/model', random.Random(FLAGS.seed)
  command = [sys.executable, f'{results.REPO}/bin/train',
             f'--flagfile={results.REPO}/configs/shapes_cpu.flags',
             f'--model_dir={model_dir}', *TINY, f'--train_steps={train_steps}',
             f'--train_annotations={run_dir}/data/train/annotations.json',
             f'--train_images={run_dir}/data/train/images']
  rows, last_loss, expected = [], None, 0
  for kill in range(1, kills + 1):
    lines, how = run_until_killed(command, f'{run_dir}/run.log', model_dir,
                                  rng, during_save=kill % 2 == 0)
    steps = [(int(m[1]), float(m[2])) for m in map(STEP_LINE.match, lines)
             if m]
    resumed = [int(m[2]) for m in map(RESUMED.search, lines) if m] or [0]
    reached = steps[-1][0] if steps else resumed[0]
    restores = latest_step(model_dir)
    # A kill may lose the steps since the last checkpoint, never more.
    lost = max(0, reached - restores - 1)
    rows.append({'kill': kill, 'how': how, 'resumed_at': resumed[0],
                 'reached': reached, 'latest_restores_at': restores,
                 'steps_lost': lost, 'loss_before_kill': last_loss,
                 'loss_after_resume': steps[0][1] if steps else None,
                 'survived': resumed[0] == expected and restores >= resumed[0]
                             and not lost})
    print(f'kill {kill}, expected to resume at {expected}: {rows[-1]}',
          flush=True)
    last_loss, expected = (steps[-1][1] if steps else last_loss), restores
  final = subprocess.run(command, capture_output=True, check=False,
                         timeout=3600)
  return rows, (final.returncode == 0
                and latest_step(model_dir) == train_steps)


def main(argv) -> None:
  del argv
  kills, steps = suite.chosen('kills', QUICK), suite.chosen('train_steps',
                                                            QUICK)
  with scratch.work_dir(FLAGS.work_dir, 'masklab_chaos_') as work_dir:
    run_dir = (scratch.fresh_folder(work_dir, 'chaos_') if FLAGS.work_dir
               else work_dir)
    rows, done = chaos(run_dir, kills, steps)
    print(f'run kept in {run_dir}' if FLAGS.work_dir else '')
  survived = sum(row.pop('survived') for row in rows)
  lost = sum(row['steps_lost'] for row in rows)
  suite.publish(results.new('chaos', 'Training killed at random moments', [
      results.table('kills', COLUMNS, rows), results.text(
          f'Faults injected: {kills}, survived: {survived}, steps lost beyond '
          f'the checkpoint interval: {lost}, final run completed its {steps} '
          f'steps: {done}.')],
      {'kills': kills, 'train_steps': steps, 'seed': FLAGS.seed}))
  if survived != kills or lost or not done:
    sys.exit(1)
