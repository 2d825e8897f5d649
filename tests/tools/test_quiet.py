"""Quiet tools: TensorFlow's log lines only with --verbose (tools/quiet.py)."""

import os
import subprocess
import sys

import pytest

from masklab_tf.tools import quiet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOOLS = ('check_dataset', 'demo', 'evaluate', 'export', 'make_shapes',
         'make_tfrecords', 'predict', 'train')


@pytest.mark.parametrize('argv,verbose', [
    ([], False), (['--verbose'], True), (['--verbose=true'], True),
    (['--verbose=false'], False), (['--verbose', '--noverbose'], False),
    (['--', '--verbose'], False), (['--output_dir=verbose'], False)])
def test_verbose_is_read_from_the_command_line(argv, verbose):
  assert quiet.wants_verbose(argv) is verbose


def test_verbose_is_read_from_flagfiles(tmp_path):
  inner = tmp_path / 'inner.flags'
  inner.write_text('# comment\n--verbose\n')
  outer = tmp_path / 'outer.flags'
  outer.write_text(f'--flagfile={inner}\n--train_steps=3\n')
  assert quiet.wants_verbose([f'--flagfile={outer}'])
  assert not quiet.wants_verbose([f'--flagfile={outer}', '--noverbose'])
  assert not quiet.wants_verbose([f'--flagfile={tmp_path / "missing"}'])


def test_every_launcher_quiets_tensorflow_before_importing_it():
  for name in TOOLS:
    with open(os.path.join(REPO, 'bin', name)) as f:
      text = f.read()
    assert text.index('quiet.before_tensorflow()') < text.index(
        f'from masklab_tf.tools import {name}'), name
    assert f'quiet.run({name})' in text, name


# TensorFlow's C++ lines (TF_CPP_MIN_LOG_LEVEL: GPU probing, oneDNN) and its
# absl-logged ones (Grappler's PredictCost, XLA: the library's own
# absl::SetMinLogLevel) on the smallest program that prints both kinds.
PROGRAM = """
import sys
sys.path.insert(0, {repo!r})
from masklab_tf.tools import quiet
quiet.before_tensorflow(sys.argv[1:])
import tensorflow as tf
tf.function(lambda x: x * 2, jit_compile=True)(tf.constant(1.0))
print('done')
"""


def test_tensorflow_prints_nothing_unless_verbose():
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  def run(*argv):
    return subprocess.run(
        [sys.executable, '-c', PROGRAM.format(repo=REPO), *argv],
        capture_output=True, text=True, check=True, env=env)
  result = run()
  assert result.stdout == 'done\n' and result.stderr == ''
  verbose = run('--verbose')
  # XLA's absl line, and TensorFlow's own (I/W/E yyyy-mm-dd ...) lines.
  assert 'Compiled cluster using XLA' in verbose.stderr, verbose.stderr
  assert ' I tensorflow/' in verbose.stderr or ' I external/' in (
      verbose.stderr), verbose.stderr
