"""bin/train refuses, at the start and in one line, what would otherwise fail
late or silently: a model_dir another training holds, one it cannot write,
a training set with more categories than --num_classes or nothing to train
on. Each check runs before data and model are built."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def run_train(model_dir, annotations, images, *extra):
  """train.main in this process, as bin/train runs it; the SystemExit it
  ends with (None when it returned)."""
  from in_process import tool_flags
  from masklab_tf.tools import train as train_tool
  with tool_flags(train_tool, '--flagfile=configs/shapes_cpu.flags',
                  f'--model_dir={model_dir}',
                  f'--train_annotations={annotations}',
                  f'--train_images={images}', *extra) as argv:
    try:
      train_tool.main(argv)
    except SystemExit as error:
      return error
  return None


def write_json(path, data):
  path.write_text(json.dumps(data))
  return str(path)


# --- num_classes and empty sets -------------------------------------------


def test_more_categories_than_num_classes_stop_before_the_build(
    shapes_train, tmp_path, tiny_training_flags):
  annotations, images = shapes_train
  # The shapes set has 4 categories; the run says 2. Without the check the
  # first step ends in "label value 3 outside [0, 3)".
  error = run_train(tmp_path / 'model', annotations, images,
                    *tiny_training_flags, '--num_classes=2',
                    '--train_steps=1')
  assert error is not None, 'trained with 4 categories into 2 classes'
  message = str(error.code)
  assert annotations in message and '4 categories' in message
  assert '--num_classes=2' in message and 'set --num_classes=4' in message
  assert len(message.splitlines()) == 1
  assert not os.path.exists(tmp_path / 'model' / 'configs.json')


def test_a_set_whose_every_annotation_was_skipped_is_an_error(
    shapes_train, tmp_path, tiny_training_flags):
  annotations, images = shapes_train
  data = json.load(open(annotations))
  for annotation in data['annotations']:
    annotation['category_id'] = 99  # Not in the categories list.
  path = write_json(tmp_path / 'skipped.json', data)
  error = run_train(tmp_path / 'model', path, images, *tiny_training_flags,
                    '--train_steps=1')
  assert error is not None, 'trained on nothing and exited 0'
  message = str(error.code)
  assert path in message and 'no instance to train on' in message
  assert f'{len(data["images"])} images kept' in message


def test_num_classes_defaults_to_the_data(shapes_configs, tmp_path):
  from masklab_tf.training import trainer as trainer_lib
  configs = shapes_configs('--num_classes=80')
  trainer = trainer_lib.Trainer(configs, str(tmp_path),
                                infer_num_classes=True)
  assert trainer.configs.model.num_classes == 4
  assert trainer.models.system.class_agnostic is False


def test_train_without_num_classes_takes_it_from_the_data(tmp_path):
  """bin/train infers --num_classes only when no flag (file) names it."""
  from absl import flags
  from in_process import tool_flags
  from masklab_tf.tools import train as train_tool
  flagfile = tmp_path / 'no_num_classes.flags'
  flagfile.write_text('\n'.join(
      line for line in open(os.path.join(REPO, 'configs', 'shapes_cpu.flags'))
      .read().splitlines() if not line.startswith('--num_classes')))
  with tool_flags(train_tool, f'--flagfile={flagfile}', '--model_dir=x'):
    assert not flags.FLAGS['num_classes'].present
  with tool_flags(train_tool, '--flagfile=configs/shapes_cpu.flags',
                  '--model_dir=x'):
    assert flags.FLAGS['num_classes'].present


# --- one trainer per model_dir --------------------------------------------

HOLD = """
import sys
from masklab_tf.training import model_dir
with model_dir.ModelDirLock(sys.argv[1]):
  print('locked', flush=True)
  sys.stdin.read()
"""


def test_a_second_training_of_a_model_dir_is_refused_naming_the_first(
    shapes_train, tmp_path, tiny_training_flags):
  from masklab_tf.training import model_dir as model_dir_lib
  annotations, images = shapes_train
  model_dir = tmp_path / 'model'
  model_dir.mkdir()
  # The first training's lock, held in this process (an flock conflicts
  # between two opens of the file, in one process as in two).
  with model_dir_lib.ModelDirLock(str(model_dir)):
    error = run_train(model_dir, annotations, images, *tiny_training_flags,
                      '--train_steps=1')
  assert error is not None, 'a second training ran into a held model_dir'
  message = str(error.code)
  assert f'PID {os.getpid()}' in message and str(model_dir) in message
  assert 'another --model_dir' in message
  assert sorted(os.listdir(model_dir)) == ['.lock']  # Nothing written.


def test_a_killed_trainers_lock_is_taken_over_with_a_warning(tmp_path,
                                                             caplog):
  from masklab_tf.training import model_dir as model_dir_lib
  holder = subprocess.Popen([sys.executable, '-c', HOLD, str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=REPO,
                            env={**os.environ, 'PYTHONPATH': REPO})
  try:
    assert holder.stdout.readline() == 'locked\n'
    with pytest.raises(model_dir_lib.ModelDirError,
                       match=f'PID {holder.pid} on '):
      with model_dir_lib.ModelDirLock(str(tmp_path)):
        pass
  finally:
    holder.kill()  # SIGKILL: no cleanup runs; the OS drops the flock.
    holder.wait()
  with model_dir_lib.ModelDirLock(str(tmp_path)):
    assert f'PID {os.getpid()} on' in (tmp_path / '.lock').read_text()
  assert f'taking over the lock of PID {holder.pid}' in caplog.text
  # A clean exit leaves no name behind: the next run takes it silently.
  caplog.clear()
  with model_dir_lib.ModelDirLock(str(tmp_path)):
    pass
  assert 'taking over' not in caplog.text


@pytest.mark.slow
def test_two_bin_train_processes_on_one_model_dir(shapes_train, tmp_path,
                                                  tiny_training_flags):
  """What a user does: a second bin/train while the first trains."""
  annotations, images = shapes_train
  model_dir = tmp_path / 'model'
  command = [sys.executable, os.path.join(REPO, 'bin', 'train'),
             f'--flagfile={REPO}/configs/shapes_cpu.flags',
             f'--model_dir={model_dir}', *tiny_training_flags,
             f'--train_annotations={annotations}',
             f'--train_images={images}']
  first = subprocess.Popen(command + ['--train_steps=100000'],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           text=True, cwd=REPO)
  try:
    assert first.stdout.readline().startswith('initialised from scratch')
    second = subprocess.run(command + ['--train_steps=1'],
                            capture_output=True, text=True, cwd=REPO,
                            timeout=300, check=False)
    assert second.returncode == 1, second.stdout[-2000:]
    assert f'in use by another training (PID {first.pid} on' in (
        second.stderr)
    assert first.poll() is None  # The first trains on.
  finally:
    first.kill()
    first.wait()


# --- an unwritable model_dir, a full disk ---------------------------------


def unwritable_dirs(tmp_path):
  """model_dirs no one can write into: below a file (for anyone), and a
  read-only folder (for a user without root's override)."""
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  dirs = [str(blocker / 'model')]
  if os.geteuid() != 0:
    read_only = tmp_path / 'read_only'
    read_only.mkdir()
    read_only.chmod(0o555)
    dirs.append(str(read_only))
  return dirs


def test_an_unwritable_model_dir_fails_first(tmp_path, tiny_training_flags):
  # The training set does not exist either: the model_dir is checked before
  # any data is read (and so before the model is built).
  for model_dir in unwritable_dirs(tmp_path):
    error = run_train(model_dir, tmp_path / 'missing.json',
                      tmp_path / 'images', *tiny_training_flags)
    assert error is not None
    message = str(error.code)
    assert f'--model_dir={model_dir} is not writable' in message, message
    assert len(message.splitlines()) == 1


def test_a_failed_saves_leftovers_are_removed_at_the_next_start(
    shapes_train, tmp_path, tiny_training_flags):
  annotations, images = shapes_train
  model_dir = tmp_path / 'model'
  for folder in ('ckpt-7_temp', 'best/ckpt-6_temp', 'notes-1_temp'):
    (model_dir / folder).mkdir(parents=True)
    (model_dir / folder / 'part-00000-of-00001.data').write_text('partial')
  (model_dir / 'ckpt-8_temp').write_text('a file, not a save folder')
  data = json.load(open(annotations))
  data['annotations'] = []  # Stops the run after the cleanup, before a build.
  path = write_json(tmp_path / 'empty.json', data)
  error = run_train(model_dir, path, images, *tiny_training_flags)
  assert 'no instance to train on' in str(error.code)
  assert not os.path.exists(model_dir / 'ckpt-7_temp')
  assert not os.path.exists(model_dir / 'best' / 'ckpt-6_temp')
  # What the trainer's checkpoint managers did not make stays.
  assert os.path.exists(model_dir / 'notes-1_temp' /
                        'part-00000-of-00001.data')
  assert os.path.isfile(model_dir / 'ckpt-8_temp')


def test_a_failed_save_is_one_sentence_and_keeps_the_last_checkpoint(
    shapes_configs, tmp_path):
  """A real failing save: the file size limit (RLIMIT_FSIZE, what a user
  can set without root) makes the checkpoint write fail with EFBIG, as a
  full disk fails it with ENOSPC; both reach the same TensorFlow path."""
  import resource
  import signal
  import tensorflow as tf
  from masklab_tf.training import model_dir as model_dir_lib
  from masklab_tf.training import trainer as trainer_lib
  configs = shapes_configs('--train_steps=100', '--image_summary_every=0',
                           '--checkpoint_every=1')
  trainer = trainer_lib.Trainer(configs, str(tmp_path))
  trainer.restore_or_initialise()
  # No step is needed to save: the first save writes ckpt-0, in full.
  model_dir_lib.save(trainer.manager, trainer.step, check_interval=False)
  kept = trainer.manager.latest_checkpoint
  assert kept.endswith('ckpt-0')
  trainer.step.assign(5)
  limits = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, limits[1]))
  try:
    with pytest.raises(Exception) as info:
      model_dir_lib.save(trainer.manager, trainer.step, check_interval=False)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    signal.signal(signal.SIGXFSZ, handler)
  message = str(info.value)
  assert message == (
      f'cannot save the checkpoint of step 5 in {tmp_path}: file too large '
      '(the size limit of one file, ulimit -f); the last complete '
      f'checkpoint, {kept}, is intact: make room and run again to resume '
      'from it'), message
  assert tf.train.latest_checkpoint(str(tmp_path)) == kept
  # The failed save's folder is cleared at the next start, nothing else.
  partial = str(tmp_path / 'ckpt-5_temp')
  assert os.path.isdir(partial)
  assert model_dir_lib.remove_partial_saves(str(tmp_path)) == [partial]
  assert tf.train.latest_checkpoint(str(tmp_path)) == kept
  tf.train.Checkpoint(model=trainer.models.train_model).restore(
      kept).expect_partial().assert_existing_objects_matched()


@pytest.mark.slow
def test_bin_train_on_a_full_disk_says_so_and_resumes(shapes_train, tmp_path,
                                                      tiny_training_flags):
  """bin/train as a user meets a full disk (here the file size limit, the
  same failing write): one line, the last checkpoint intact, and the next
  run clears the partial save and resumes."""
  import resource
  import signal
  annotations, images = shapes_train
  model_dir = tmp_path / 'model'
  command = [sys.executable, os.path.join(REPO, 'bin', 'train'),
             f'--flagfile={REPO}/configs/shapes_cpu.flags',
             f'--model_dir={model_dir}', *tiny_training_flags,
             '--image_summary_every=0', '--checkpoint_every=1',
             f'--train_annotations={annotations}',
             f'--train_images={images}']

  def run(steps, preexec_fn=None):
    return subprocess.run(command + [f'--train_steps={steps}'],
                          capture_output=True, text=True, cwd=REPO,
                          timeout=600, check=False, preexec_fn=preexec_fn)

  def small_files():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill.
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))

  first = run(1)
  assert first.returncode == 0, first.stderr[-3000:]
  full = run(2, small_files)
  assert full.returncode == 1, full.stderr[-3000:]
  assert full.stderr.strip().splitlines()[-1] == (
      f'bin/train: error: cannot save the checkpoint of step 2 in '
      f'{model_dir}: file too large (the size limit of one file, ulimit -f); '
      f'the last complete checkpoint, {model_dir}/ckpt-1, is intact: make '
      'room and run again to resume from it')
  assert 'Traceback' not in full.stderr
  assert os.path.isdir(model_dir / 'ckpt-2_temp')
  again = run(2)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'removed {model_dir}/ckpt-2_temp' in again.stderr
  assert f'resumed from {model_dir}/ckpt-1 at step 1' in again.stdout
  assert not os.path.exists(model_dir / 'ckpt-2_temp')
