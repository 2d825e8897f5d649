"""tf.distribute: mirrored replicas match one device; two local workers
end a multi-worker run with identical weights (tests/distributed_worker.py
does the TensorFlow side in fresh processes)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), 'distributed_worker.py')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def runs(shapes_train, tmp_path_factory):
  """The three worker processes of this module's tests, started together:
  each spends most of its time importing and tracing, single-threaded
  Python, and the two workers wait on each other, so side by side on 2
  cores they take much less than one after another."""
  tmp_path = tmp_path_factory.mktemp('distributed')

  def launch(args, log, env=None):
    # Logs go to files: a pipe nobody reads yet would fill and stall it.
    with open(tmp_path / log, 'w') as f:
      return subprocess.Popen([sys.executable, WORKER, *args], env=env,
                              stdout=f, stderr=subprocess.STDOUT)

  out = str(tmp_path / 'result.json')
  # The comparison is of the distribution's arithmetic, on TensorFlow's
  # own kernels: oneDNN (on by itself on AVX512_VNNI / BF16 CPUs) computes a
  # dilated conv's kernel gradient for a batch of 4 and for two batches of 2
  # with sums so differently ordered that, on a Xeon of that generation,
  # one step's weights differed by 2.6e-5 (4.5 % of that kernel's update;
  # 2.8e-7 with oneDNN off). A wrong loss scale moves them by ~100 %.
  mirrored = launch(['mirrored_vs_one', *shapes_train, out], 'mirrored.log',
                    dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0'))
  ports = [_free_port(), _free_port()]
  cluster = {'worker': [f'127.0.0.1:{port}' for port in ports]}
  model_dir = str(tmp_path / 'model')
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    workers.append(launch(
        ['multi_worker', *shapes_train, model_dir,
         str(tmp_path / f'worker{index}.npz')], f'worker{index}.log', env))
  try:
    yield {'tmp_path': tmp_path, 'out': out, 'mirrored': mirrored,
           'workers': workers, 'model_dir': model_dir}
  finally:
    for process in [mirrored] + workers:
      process.kill()
      process.wait()


def test_mirrored_two_cpus_matches_one_device(runs):
  mirrored = runs['mirrored']
  assert mirrored.wait(timeout=900) == 0, (
      runs['tmp_path'] / 'mirrored.log').read_text()[-3000:]
  with open(runs['out']) as f:
    report = json.load(f)
  assert report['replicas'] == 2
  assert report['one'].keys() == report['mirrored'].keys()
  for name, value in report['one'].items():
    np.testing.assert_allclose(report['mirrored'][name], value, rtol=1e-5,
                               atol=1e-6, err_msg=name)
  # One SGD step from the same weights on the same global batch.
  name, (diff, update) = max(report['weights'].items(),
                             key=lambda item: item[1][0])
  assert diff < 1e-5, f'{name}: differs by {diff:.2e}, step moved it {update:.2e}'
  assert all(update > 0 for _, update in report['weights'].values())


def test_two_workers_end_with_identical_weights(runs):
  tmp_path, model_dir, workers = (runs['tmp_path'], runs['model_dir'],
                                  runs['workers'])
  for index, worker in enumerate(workers):
    assert worker.wait(timeout=900) == 0, (
        tmp_path / f'worker{index}.log').read_text()[-3000:]
  first, second = (np.load(tmp_path / f'worker{i}.npz') for i in range(2))
  assert int(first['replicas']) == 2
  assert int(first['step']) == int(second['step']) == 2
  assert first['loss'] == second['loss']
  weights = [k for k in first.files if k.startswith('w')]
  assert weights and len(weights) == len(second.files) - 3
  for key in weights:
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)
  # Only the chief (worker 0) writes the run's checkpoints.
  assert os.path.exists(os.path.join(model_dir, 'ckpt-2.index'))
  assert os.path.exists(os.path.join(model_dir, 'checkpoint'))
