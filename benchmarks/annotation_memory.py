"""Peak memory of training on an image with very many annotations.

Training memory should follow the image and the instances training keeps
(--max_instances), not the annotation count: 10,000 annotations on one
160x160 image once took a 3-step run to 4.8 GB. This runs bin/train for 3
steps (a tiny shapes_cpu model) on one 160x160 image with 10,000
annotations and on the same image with 5, each in a fresh process whose
peak RSS (os.wait4's ru_maxrss) is its own, and prints a table: case,
annotations, peak RSS in MB, ratio to the few-annotation control (the goal:
at most 1.5).

Usage:
  python benchmarks/annotation_memory.py [--annotations=10000]
      [--repo=/path/to/another/checkout]  # e.g. the code before a change

`measure()` returns the rows, for tables that collect such runs.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_integer('annotations', 10_000,
                     'Annotations on the image of the crowded case.')
flags.DEFINE_integer('control_annotations', 5,
                     'Annotations on the same image in the control case.')
flags.DEFINE_string('repo', REPO, 'Checkout whose bin/train runs.')

SIZE = 160
TINY = ('--backbone_depth=10', '--rpn_head_channels=32',
        '--num_proposals=30', '--test_num_proposals=30',
        '--rpn_pre_nms_top_k=300', '--num_sampled_rois=8',
        '--hypercolumn_channels=8', '--refine_filters=16',
        '--max_detections=5', '--min_sizes=160', '--eval_min_size=160',
        '--max_size=160', '--batch_size=2', '--log_every=1',
        '--checkpoint_every=100', '--warmup_steps=1', '--train_steps=3')


def write_set(folder: str, num_annotations: int, seed: int = 0) -> tuple:
  """One 160x160 image with `num_annotations` random rectangles (polygons)
  of 4 classes; returns (annotations json, images folder)."""
  rng = np.random.default_rng(seed)
  images = os.path.join(folder, 'images')
  os.makedirs(images)
  pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(os.path.join(images, 'crowded.png'))
  annotations = []
  for annotation_id in range(1, num_annotations + 1):
    height, width = rng.integers(4, 40, 2)
    top, left = rng.integers(0, SIZE - height), rng.integers(0, SIZE - width)
    bottom, right = top + height, left + width
    annotations.append({
        'id': annotation_id, 'image_id': 1,
        'category_id': int(rng.integers(1, 5)), 'iscrowd': 0,
        'segmentation': [[int(left), int(top), int(right), int(top),
                          int(right), int(bottom), int(left), int(bottom)]]})
  data = {'images': [{'id': 1, 'file_name': 'crowded.png', 'height': SIZE,
                      'width': SIZE}],
          'annotations': annotations,
          'categories': [{'id': i, 'name': f'class{i}'} for i in range(1, 5)]}
  path = os.path.join(folder, 'annotations.json')
  with open(path, 'w') as file:
    json.dump(data, file)
  return path, images


def peak_rss_mb(command: list[str], cwd: str) -> float:
  """Runs `command`; returns its peak resident set in MB (its own, since
  wait4 reports the one child). Raises with its output if it fails."""
  with tempfile.TemporaryFile() as output:
    process = subprocess.Popen(command, cwd=cwd, stdout=output,
                               stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
      output.seek(0)
      tail = output.read()[-3000:].decode('utf-8', 'replace')
      raise RuntimeError(f'{" ".join(command)} exited with '
                         f'{process.returncode}:\n{tail}')
  return usage.ru_maxrss / 1024  # Linux reports KB


def measure(num_annotations: int = 10_000, control_annotations: int = 5,
            repo: str = REPO) -> list[dict]:
  """Peak RSS of a 3-step training on the crowded image and on the control.

  Returns rows {'case', 'annotations', 'peak_rss_mb', 'ratio'} (ratio to the
  control), control first. Works in a fresh temporary folder, removed after.
  """
  work = tempfile.mkdtemp(prefix='annotation_memory_')
  try:
    rows = []
    for case, count in (('few annotations (control)', control_annotations),
                        ('many annotations', num_annotations)):
      folder = os.path.join(work, f'set_{count}')
      annotations, images = write_set(folder, count)
      flagfile = os.path.join(repo, 'configs', 'shapes_cpu.flags')
      command = [sys.executable, os.path.join(repo, 'bin', 'train'),
                 f'--flagfile={flagfile}', *TINY, f'--train_annotations={annotations}',
                 f'--train_images={images}',
                 f'--model_dir={os.path.join(folder, "run")}']
      rows.append({'case': case, 'annotations': count,
                   'peak_rss_mb': peak_rss_mb(command, cwd=repo)})
    for row in rows:
      row['ratio'] = row['peak_rss_mb'] / rows[0]['peak_rss_mb']
    return rows
  finally:
    shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict]) -> str:
  lines = ['| case | annotations | peak RSS MB | ratio |',
           '|---|---:|---:|---:|']
  lines += [f'| {row["case"]} | {row["annotations"]} | '
            f'{row["peak_rss_mb"]:.0f} | {row["ratio"]:.2f} |' for row in rows]
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  rows = measure(FLAGS.annotations, FLAGS.control_annotations, FLAGS.repo)
  print(f'3-step training, one {SIZE}x{SIZE} image, bin/train of '
        f'{FLAGS.repo}')
  print(table(rows))


if __name__ == '__main__':
  app.run(main)
