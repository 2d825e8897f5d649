"""bin/export and bin/evaluate use what was trained: the run's configs.json
and class names, not the flags file it started from. Flags named on the
command line override, with a warning where they differ."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SHAPE_NAMES = ['circle', 'square', 'triangle', 'cross']


@pytest.fixture
def run_dir(shapes_configs, tmp_path):
  """A model_dir as bin/train leaves it before its first checkpoint: the
  run's configs (other overrides than the flags file: 6 classes, 8
  hypercolumn channels, shapes_cpu has 4 and 16) and its categories."""
  from masklab_tf import config
  model_dir = tmp_path / 'run'
  model_dir.mkdir()
  configs = shapes_configs('--num_classes=6', '--hypercolumn_channels=8')
  config.to_json(configs, str(model_dir / config.CONFIGS_FILE))
  (model_dir / 'categories.json').write_text(json.dumps({'categories': [
      {'id': i, 'name': name} for i, name in enumerate(SHAPE_NAMES, 1)]}))
  return model_dir


@pytest.mark.parametrize('tool', ['export', 'evaluate'])
def test_the_runs_configs_build_the_model(tool, run_dir, caplog):
  import importlib
  from in_process import tool_flags
  from masklab_tf.tools import common_flags
  module = importlib.import_module(f'masklab_tf.tools.{tool}')
  # As the README runs them: the training's flags file, and one setting
  # that may differ at test time, given on the command line.
  args = ['--flagfile=configs/shapes_cpu.flags', f'--model_dir={run_dir}',
          '--max_detections=7']
  args += (['--export_dir=unused'] if tool == 'export' else
           ['--annotations=a.json', '--images=images'])
  with tool_flags(module, *args):
    configs = common_flags.run_configs(str(run_dir), args)
  assert configs.model.num_classes == 6  # The run's, not the flags file's.
  assert configs.model.hypercolumn_channels == 8
  assert configs.model.max_detections == 7  # The command line's.
  assert configs.data.train.annotations  # The run's training set.
  # tiny_training_flags train with 5.
  assert '--max_detections=7 overrides the run\'s 5' in caplog.text
  (ignored,) = [line for line in caplog.text.splitlines()
                if 'the --flagfile values of these are not used' in line]
  assert '--hypercolumn_channels=8' in ignored
  assert '--num_classes=6' in ignored and 'max_detections' not in ignored


def test_flags_alone_without_a_configs_json(tmp_path, caplog):
  from in_process import tool_flags
  from masklab_tf.tools import common_flags
  from masklab_tf.tools import export
  args = ['--flagfile=configs/shapes_cpu.flags', f'--model_dir={tmp_path}',
          '--export_dir=unused', '--num_classes=3']
  with tool_flags(export, *args):
    configs = common_flags.run_configs(str(tmp_path), args)
  assert configs.model.num_classes == 3
  assert 'no configs.json; the model is built from the flags' in caplog.text


def test_command_line_flags_are_those_named_outside_flagfiles():
  from in_process import tool_flags
  from masklab_tf.tools import common_flags
  from masklab_tf.tools import export
  with tool_flags(export, '--model_dir=m', '--export_dir=e'):
    assert common_flags.command_line_flags(
        ['--flagfile=configs/shapes_cpu.flags', '--num_classes=3',
         '--nodeterministic', '--max_size', '500', '-num_proposals=3',
         '--unknown=1', 'positional']) == {
             'num_classes', 'deterministic', 'max_size', 'num_proposals'}


def test_export_names_the_classes_the_run_recorded(run_dir):
  from in_process import tool_flags
  from masklab_tf.tools import common_flags
  from masklab_tf.tools import export
  args = ['--flagfile=configs/shapes_cpu.flags', f'--model_dir={run_dir}',
          '--export_dir=unused']
  with tool_flags(export, *args):
    configs = common_flags.run_configs(str(run_dir), args)
    categories = export.categories_for(configs, str(run_dir))
  assert [c['name'] for c in categories] == SHAPE_NAMES


@pytest.mark.slow
def test_export_and_evaluate_as_the_readme_runs_them(shapes_dir, tmp_path,
                                                     tiny_training_flags):
  """Trained with other settings than its flags file (the tiny model's),
  exported and evaluated with only the flags file: the run's model, with
  its class names."""
  from in_process import tool_flags
  from masklab_tf.tools import train as train_tool
  model_dir = tmp_path / 'run'
  with tool_flags(
      train_tool, '--flagfile=configs/shapes_cpu.flags',
      f'--model_dir={model_dir}', *tiny_training_flags, '--train_steps=1',
      '--image_summary_every=0',
      f'--train_annotations={shapes_dir}/train/annotations.json',
      f'--train_images={shapes_dir}/train/images') as argv:
    train_tool.main(argv)
  assert [c['name'] for c in json.load(open(
      model_dir / 'categories.json'))['categories']] == SHAPE_NAMES
  export_dir = tmp_path / 'export' / '1'
  exported = subprocess.run(
      [sys.executable, 'bin/export', '--flagfile=configs/shapes_cpu.flags',
       f'--model_dir={model_dir}', f'--export_dir={export_dir}',
       '--max_image_pixels=30000'],
      capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert '4 class names' in exported.stdout
  assets = json.load(open(export_dir / 'assets' / 'categories.json'))
  assert [c['name'] for c in assets] == SHAPE_NAMES
  serve = tf.saved_model.load(str(export_dir)).signatures['serving_encoded']
  small, large = (tf.io.encode_png(tf.zeros([side, side, 3], tf.uint8))
                  for side in (160, 200))
  assert int(serve(encoded=tf.stack([small]))['num_detections'].shape[0]) == 1
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='element 1 of the batch: 200 x 200 = 40000 pixels'
                     ', over the limit of 30000'):
    serve(encoded=tf.stack([small, large]))
  evaluated = subprocess.run(
      [sys.executable, 'bin/evaluate', '--flagfile=configs/shapes_cpu.flags',
       f'--model_dir={model_dir}', f'--output_dir={tmp_path / "eval"}',
       f'--annotations={shapes_dir}/val/annotations.json',
       f'--images={shapes_dir}/val/images'],
      capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert 'mask' in json.load(open(tmp_path / 'eval' / 'metrics.json'))
