"""Tools and benchmarks touch only what they made: TFRecord writers use
temporary names of their own, benchmarks work in fresh folders and never
delete a folder the user named."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_tfrecord_writers_never_touch_anothers_temporary_files(
    shapes_train, tmp_path):
  """Another writer of the same prefix is mid-way: its temporary shard and
  categories files stay as they are; ours leave nothing behind."""
  from masklab_tf.data import coco
  from masklab_tf.data import tfrecord
  dataset = coco.read_coco(*shapes_train, verify_images='none')
  prefix = str(tmp_path / 'train')
  others = [tmp_path / 'train-00000-of-00001.tfrecord.tmp',
            tmp_path / 'train.categories.json.tmp']
  for other in others:
    other.write_bytes(b'another writer\'s bytes')
  paths = tfrecord.write_tfrecords(dataset, prefix, num_shards=1)
  for other in others:
    assert other.read_bytes() == b'another writer\'s bytes', other
  assert sorted(os.listdir(tmp_path)) == sorted(
      [os.path.basename(p) for p in paths] +
      ['train.categories.json'] + [o.name for o in others])
  assert len(tfrecord.read_categories(prefix + '.categories.json')) == 4


def test_a_work_dir_of_the_users_keeps_what_was_there(tmp_path):
  from benchmarks.harness import scratch
  given = tmp_path / 'mine'
  given.mkdir()
  (given / 'model').mkdir()
  (given / 'model' / 'notes.txt').write_text('keep')
  with scratch.work_dir(str(given), 'bench_') as work:
    assert work == str(given)
    own = scratch.fresh_folder(work, 'run_')
    assert os.path.dirname(own) == str(given) and not os.listdir(own)
    assert scratch.fresh_folder(work, 'run_') != own
  assert (given / 'model' / 'notes.txt').read_text() == 'keep'
  # An earlier run's output is renamed aside, never deleted.
  assert scratch.set_aside(str(given / 'model')) == str(
      given / 'model.earlier-1')
  assert (given / 'model.earlier-1' / 'notes.txt').read_text() == 'keep'
  assert scratch.set_aside(str(given / 'model')) is None


def test_a_default_work_dir_is_fresh_and_removed(tmp_path):
  from benchmarks.harness import scratch
  seen = []
  with pytest.raises(RuntimeError):
    with scratch.work_dir(None, 'masklab_bench_') as work:
      seen.append(work)
      assert not os.listdir(work)
      open(os.path.join(work, 'x'), 'w').close()
      with scratch.work_dir(None, 'masklab_bench_') as other:
        assert other != work  # Two runs never share it.
      raise RuntimeError('the run failed')
  assert 'masklab_bench_' in os.path.basename(seen[0])
  assert not os.path.exists(seen[0])


def test_benchmarks_delete_no_folder_they_did_not_make():
  """No benchmark rmtree's a path it did not create itself, nor defaults
  to a fixed scratch name under /tmp that two runs would share."""
  import re
  root = os.path.join(REPO, 'benchmarks')
  paths = sorted(os.path.join(folder, name)
                 for folder, _, names in os.walk(root) for name in names)
  assert len(paths) > 10, paths
  for path in paths:
    name = os.path.relpath(path, root)
    if not name.endswith('.py') or name == 'harness/scratch.py':
      continue
    text = open(path).read()
    assert not re.search(r"DEFINE_string\('(work_dir|model_dir|output_dir)',"
                         r"\s*'/tmp", text), name
    for match in re.finditer(
        r'shutil\.rmtree\((?:os\.path\.dirname\()?([\w.]+)', text):
      variable = match.group(1)
      # Each removed folder was made by this run: by mkdtemp or by
      # benchmarks/scratch.py's fresh_folder, where it is named.
      made = re.search(rf'{re.escape(variable)} = (tempfile\.mkdtemp|'
                       r'scratch\.fresh_folder|os\.path\.join\('
                       r'scratch\.fresh_folder)', text)
      assert made, (name, match.group(0))


@pytest.mark.slow
def test_serving_benchmark_leaves_the_users_work_dir_alone(tmp_path):
  """The serving benchmark once replaced WORK_DIR/1 wholesale."""
  work = tmp_path / 'work'
  (work / '1').mkdir(parents=True)
  (work / '1' / 'mine.txt').write_text('keep')
  result = subprocess.run(
      [sys.executable, '-m', 'benchmarks', 'serving',
       '--config=configs/shapes_cpu.flags', '--size=160', '--num_runs=1',
       '--num_runs_batch=1', '--batch_size=2', f'--work_dir={work}'],
      capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'serving_default' in result.stdout
  assert (work / '1' / 'mine.txt').read_text() == 'keep'
  assert sorted(os.listdir(work)) == ['1']  # Its own export is gone.
