"""The command-line tools: importing them defines no flags, so they share a
process (tests, notebooks); each launcher defines its own."""

import importlib
import os
import subprocess
import sys

from absl import flags
import pytest

TOOLS = ('check_dataset', 'demo', 'evaluate', 'export', 'labels_to_coco',
         'make_shapes', 'make_tfrecords', 'predict', 'train')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_tools_import_side_by_side_without_defining_flags():
  modules = [importlib.import_module(f'masklab_tf.tools.{name}')
             for name in TOOLS]
  # export, evaluate and train all name --model_dir; predict and demo
  # --output_dir: importing all of them would have clashed.
  assert all(callable(module.define_flags) for module in modules)
  for name in ('model_dir', 'export_dir', 'saved_model', 'num_shards'):
    assert name not in flags.FLAGS


def test_each_launcher_defines_its_flags():
  # A missing required flag is reported by absl, which needs the flag to
  # exist: the launcher defined it.
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'bin', 'make_tfrecords')],
      capture_output=True, text=True, cwd=REPO, check=False)
  assert result.returncode == 1
  assert '--annotations' in result.stderr and 'must have a value' in (
      result.stderr)


def usage_commands(module) -> list[list[str]]:
  """The `bin/<tool> ...` commands of a tool's docstring Usage, without
  their [optional] parts, as argv lists."""
  import re
  import shlex
  usage = module.__doc__.split('Usage:')[1].split('\n\n')
  commands = []
  for block in usage:
    text = re.sub(r'\[[^\]]*\]', ' ', block.replace('\\\n', ' '))
    text = ' '.join(text.split())
    if text.startswith('bin/'):
      commands.append(shlex.split(text)[1:])
  return commands


@pytest.mark.parametrize('name', TOOLS)
def test_each_documented_usage_parses(name):
  """Every tool's documented command line parses with the tool's flags, the
  configs' flags beside them (a name defined twice would raise), and every
  flag it names is set."""
  from in_process import tool_flags
  module = importlib.import_module(f'masklab_tf.tools.{name}')
  commands = usage_commands(module)
  assert commands, name
  for argv in commands:
    with tool_flags(module, *argv):
      for arg in argv:
        flag = arg[2:].split('=')[0]
        if flag != 'flagfile':
          assert flags.FLAGS[flag].present, (name, arg)


def test_train_and_evaluate_usage_land_in_the_configs():
  from in_process import tool_flags
  from masklab_tf import config
  from masklab_tf.tools import evaluate
  from masklab_tf.tools import train
  (argv,) = usage_commands(train)
  with tool_flags(train, *argv):
    configs = config.all_from_flags()
  assert configs.data.train == config.DataSplitConfig(
      annotations='demo_data/train/annotations.json',
      images='demo_data/train/images')
  assert configs.data.val == config.DataSplitConfig(
      annotations='demo_data/val/annotations.json',
      images='demo_data/val/images')
  for argv in usage_commands(evaluate):
    with tool_flags(evaluate, *argv):
      assert flags.FLAGS.annotations == 'demo_data/val/annotations.json'
      assert flags.FLAGS.images == 'demo_data/val/images'
      assert config.all_from_flags().data.val == config.DataSplitConfig()


def test_train_refuses_a_val_set_evaluation_cannot_read(tmp_path):
  from absl import app
  from in_process import tool_flags
  from masklab_tf.tools import train
  with tool_flags(train, f'--model_dir={tmp_path}',
                  '--val_tfrecords=records/val-*') as argv:
    with pytest.raises(app.UsageError, match='--val_annotations'):
      train.main(argv)
  assert not os.listdir(tmp_path)
