"""Kill training with SIGKILL at random moments; prove it loses nothing.

Runs bin/train (a small shapes_cpu model, a checkpoint every 2 steps) and
kills it N times: half at a random moment, half while a checkpoint is being
written (the moment TensorFlow's temporary checkpoint files appear). After
every kill it checks, before restarting, that the "latest" checkpoint
restores (all objects matched) at a step no earlier than the last one the
run reported complete; the restarted run must say it resumed there. At the
end the run trains to completion and the script prints a table: faults
injected, survived, steps lost beyond the checkpoint interval (must be 0),
and the loss before each kill against the loss after the resume.

Usage:
  python benchmarks/chaos_train.py [--kills=10] [--work_dir=DIR]

Without --work_dir it works in a fresh temporary folder, removed at the
end; with one, in a new folder of its own inside it (kept, and named at the
end), so nothing that was there before is touched.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from masklab_tf.data import synthetic  # pylint: disable=g-import-not-at-top

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scratch  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_integer('kills', 10, 'SIGKILLs to inject.')
flags.DEFINE_string('work_dir', None, 'Where to keep the run (a new folder '
                    'in it); default: a temporary folder, removed at the '
                    'end.')
flags.DEFINE_integer('train_steps', 60, 'Steps the run must complete.')
flags.DEFINE_integer('seed', 0, 'Seed of the kill moments.')

TINY = ('--backbone_depth=10', '--rpn_head_channels=32',
        '--num_proposals=30', '--test_num_proposals=30',
        '--rpn_pre_nms_top_k=300', '--num_sampled_rois=8',
        '--hypercolumn_channels=8', '--refine_filters=16',
        '--max_detections=5', '--min_sizes=96', '--eval_min_size=96',
        '--max_size=96', '--batch_size=2', '--log_every=1',
        '--checkpoint_every=2', '--keep_checkpoints=2', '--warmup_steps=5')
STEP_LINE = re.compile(r'^step (\d+)/\d+  loss ([0-9.]+)')
RESUMED = re.compile(r'resumed from (\S+) at step (\d+)')


def latest_step(model_dir):
  """(step, path) of the checkpoint `checkpoint` names, restored for real
  in a fresh process (all objects matched), or (0, None)."""
  check = subprocess.run(
      [sys.executable, '-c', (
          'import sys, tensorflow as tf\n'
          'path = tf.train.latest_checkpoint(sys.argv[1])\n'
          'if path:\n'
          '  reader = tf.train.load_checkpoint(path)\n'
          '  names = [n for n, _ in tf.train.list_variables(path)]\n'
          '  assert any("step" in n for n in names), names\n'
          '  step = [reader.get_tensor(n) for n in names\n'
          '          if n.startswith("step/")][0]\n'
          '  print(int(step), path)\n'
          'else:\n'
          '  print(0, None)\n'), model_dir],
      capture_output=True, text=True, timeout=300)
  if check.returncode != 0:
    raise RuntimeError(f'latest checkpoint of {model_dir} does not load:\n'
                       f'{check.stderr[-2000:]}')
  step, path = check.stdout.split()
  return int(step), (None if path == 'None' else path)


def saving(model_dir):
  """Whether a checkpoint is being written (TF's temporary files exist)."""
  try:
    return any('_temp' in name or name.endswith('.tmp')
               for name in os.listdir(model_dir))
  except FileNotFoundError:
    return False


def train_command(data_dir, model_dir):
  return [sys.executable, os.path.join(REPO, 'bin', 'train'),
          f'--flagfile={REPO}/configs/shapes_cpu.flags',
          f'--model_dir={model_dir}', *TINY,
          f'--train_steps={FLAGS.train_steps}',
          f'--train_annotations={data_dir}/train/annotations.json',
          f'--train_images={data_dir}/train/images']


def run_until_killed(command, model_dir, rng, during_save):
  """Starts training, kills it; returns (stdout lines, how it was killed)."""
  log_path = os.path.join(os.path.dirname(model_dir), 'run.log')
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               text=True)
    started = time.time()
    # Let it train a little first (import and tracing take ~15-30 s).
    while process.poll() is None and not _has_step(log_path):
      time.sleep(0.2)
    how = 'finished before the kill'
    deadline = time.time() + rng.uniform(0.5, 8.0)
    while process.poll() is None:
      if during_save and saving(model_dir):
        process.send_signal(signal.SIGKILL)
        how = 'during a checkpoint write'
        break
      if not during_save and time.time() >= deadline:
        process.send_signal(signal.SIGKILL)
        how = f'at a random moment ({time.time() - started:.1f} s in)'
        break
      if during_save and time.time() > deadline + 30:
        process.send_signal(signal.SIGKILL)
        how = 'at a random moment (no save seen)'
        break
      time.sleep(0.005)
    process.wait()
  with open(log_path) as f:
    return f.read().splitlines(), how


def _has_step(path):
  with open(path) as f:
    return any(STEP_LINE.match(line) for line in f)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  with scratch.work_dir(FLAGS.work_dir, 'masklab_chaos_') as work_dir:
    run_dir = (scratch.fresh_folder(work_dir, 'chaos_') if FLAGS.work_dir
               else work_dir)
    chaos(run_dir)
    if FLAGS.work_dir:
      print(f'run kept in {run_dir}')


def chaos(run_dir):
  """The kills, the checks and the table, in `run_dir` (empty)."""
  rng = random.Random(FLAGS.seed)
  data_dir = os.path.join(run_dir, 'data')
  model_dir = os.path.join(run_dir, 'model')
  synthetic.make_shapes(data_dir, num_train=16, num_val=4, seed=0)
  command = train_command(data_dir, model_dir)
  rows, survived, lost = [], 0, 0
  last_loss, expected_resume = None, 0
  for kill in range(FLAGS.kills):
    lines, how = run_until_killed(command, model_dir, rng,
                                  during_save=kill % 2 == 1)
    steps = [(int(m.group(1)), float(m.group(2))) for m in
             map(STEP_LINE.match, lines) if m]
    resumed = [int(m.group(2)) for m in map(RESUMED.search, lines) if m]
    resumed_at = resumed[0] if resumed else 0
    reported = steps[-1][0] if steps else resumed_at
    # Raises if "latest" does not restore: that is the failure we hunt.
    checkpoint_step, _ = latest_step(model_dir)
    # A kill may lose the steps since the last checkpoint (at most
    # checkpoint_every - 1 = 1 here), never more.
    lost_here = max(0, reported - checkpoint_step - 1)
    lost += lost_here
    if (resumed_at == expected_resume and checkpoint_step >= resumed_at and
        not lost_here):
      survived += 1
    rows.append((kill + 1, how, resumed_at, reported, checkpoint_step,
                 lost_here, last_loss, steps[0][1] if steps else float('nan')))
    print(f'kill {kill + 1}: {how}; resumed at {resumed_at} (expected '
          f'{expected_resume}), reached step {reported}, latest checkpoint '
          f'restores at {checkpoint_step}', flush=True)
    last_loss = steps[-1][1] if steps else last_loss
    expected_resume = checkpoint_step
  final = subprocess.run(command, capture_output=True, text=True,
                         timeout=3600)
  done = final.returncode == 0 and latest_step(model_dir)[0] == (
      FLAGS.train_steps)
  print('\n| kill | how | resumed at | reached | latest restores at | steps '
        'lost | loss before kill | first loss after resume |')
  print('|---:|---|---:|---:|---:|---:|---:|---:|')
  for kill, how, resumed, reached, saved, lost_here, before, after in rows:
    before = f'{before:.3f}' if before is not None else '-'
    print(f'| {kill} | {how} | {resumed} | {reached} | {saved} | '
          f'{lost_here} | {before} | {after:.3f} |')
  print(f'\nfaults injected: {FLAGS.kills}, survived: {survived}, steps lost '
        f'beyond the checkpoint interval: {lost}, final run completed '
        f'{FLAGS.train_steps} steps: {done}')
  if survived != FLAGS.kills or lost or not done:
    sys.exit(1)


if __name__ == '__main__':
  app.run(main)
