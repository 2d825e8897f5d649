"""tf.distribute: mirrored replicas match one device; two local workers
end a multi-worker run with identical weights (tests/distributed_worker.py
does the TensorFlow side in fresh processes)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), 'distributed_worker.py')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_mirrored_two_cpus_matches_one_device(shapes_train, tmp_path):
  out = str(tmp_path / 'result.json')
  result = subprocess.run(
      [sys.executable, WORKER, 'mirrored_vs_one', *shapes_train, out],
      capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out) as f:
    report = json.load(f)
  assert report['replicas'] == 2
  assert report['one'].keys() == report['mirrored'].keys()
  for name, value in report['one'].items():
    np.testing.assert_allclose(report['mirrored'][name], value, rtol=1e-5,
                               atol=1e-6, err_msg=name)
  # One SGD step from the same weights on the same global batch.
  assert report['max_weight_diff'] < 1e-5


def test_two_workers_end_with_identical_weights(shapes_train, tmp_path):
  ports = [_free_port(), _free_port()]
  cluster = {'worker': [f'127.0.0.1:{port}' for port in ports]}
  model_dir = str(tmp_path / 'model')
  workers = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    workers.append(subprocess.Popen(
        [sys.executable, WORKER, 'multi_worker', *shapes_train, model_dir,
         str(tmp_path / f'worker{index}.npz')],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = []
  try:
    for worker in workers:
      logs.append(worker.communicate(timeout=900)[0])
  finally:
    for worker in workers:
      worker.kill()
  for worker, log in zip(workers, logs):
    assert worker.returncode == 0, log[-3000:]
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
