"""The command-line tools: importing them defines no flags, so they share a
process (tests, notebooks); each launcher defines its own."""

import importlib
import os
import subprocess
import sys

from absl import flags

TOOLS = ('check_dataset', 'demo', 'evaluate', 'export', 'make_shapes',
         'make_tfrecords', 'predict', 'train')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
