"""Hostile and unusual inputs, tried through the real tools: one table.

Why one file of this length: each hostile-input class is a small function
that makes its input, runs the tool a user would run on it and reads what
happened into a row; the table is only worth reading with all of them.

Every class of issue 20 ("Hostile and unusual inputs") is tried as a user
or an attacker would: subprocesses of bin/check_dataset, bin/make_tfrecords,
bin/train, bin/export, bin/evaluate and bin/predict, and requests to the
exported SavedModel's signatures (loaded with tf.saved_model.load, as TF
Serving would). The script makes its own inputs: a small synthetic shapes
set, images of extreme aspect ratios, decompression bombs, paths that leave
the images folder, and a tiny model trained for a few steps and exported.

Each row is read from what happened, never written in: item (of the
issue), input, outcome (exit code or what the signature did), the message
shown (the first line that names the problem, clipped), and anything lost
(results, checkpoints, files). Item 6's rows are
benchmarks/annotation_memory.py's measure() (peak RSS of a 3-step training
on 10,000 annotations and on the few-annotation control).

Usage:
  python benchmarks/hostile_inputs.py [--work_dir=DIR] [--write_results]
      [--items=1,5,12]  # only these items' cases (a quick look)

Without --work_dir everything happens in a fresh temporary folder, removed
at the end; with one, in a new folder inside it, removed at the end too
(nothing that was in DIR is touched). --write_results writes the table to
benchmarks/results/hostile_inputs/table.md with the date, the machine and
the command. Runs in about 8 minutes on 2 cores.

Item 9's read-only model_dir and full disk need a read-only folder and a
full filesystem: as root (whom chmod does not stop) the script mounts a
read-only bind mount and a small tmpfs of its own, and unmounts them; where
mounting is not allowed, a non-root user gets chmod 555 and root gets a row
saying it was not tried; the full disk becomes a file size limit
(RLIMIT_FSIZE, the same failed write as ENOSPC).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import io
import json
import os
import re
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

from absl import app
from absl import flags
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

FLAGS = flags.FLAGS
RESULTS = os.path.join(REPO, 'benchmarks', 'results', 'hostile_inputs')

# The smallest shapes_cpu model that has every part (the tests' and
# benchmarks/chaos_train.py's), over configs/shapes_cpu.flags.
FLAGFILE = os.path.join(REPO, 'configs', 'shapes_cpu.flags')
TINY = ('--backbone_depth=10', '--rpn_head_channels=32',
        '--num_proposals=30', '--test_num_proposals=30',
        '--rpn_pre_nms_top_k=300', '--num_sampled_rois=8',
        '--hypercolumn_channels=8', '--refine_filters=16',
        '--max_detections=5', '--min_sizes=96', '--eval_min_size=96',
        '--max_size=96', '--batch_size=2', '--log_every=1',
        '--checkpoint_every=2', '--warmup_steps=2',
        '--image_summary_every=0')
TRAIN_STEPS = 8
MESSAGE_CHARS = 100
NUM_GOOD = 5  # Good images of bin/predict's folder.

# Lines of TensorFlow's start-up chatter, never the message of a case.
NOISE = ('cuda', 'TF-TRT', 'oneDNN', 'cpu_feature_guard',
         'This TensorFlow binary', 'To enable the following',
         'rebuild TensorFlow', 'Unable to register', 'computation_placer',
         'WARNING: All log messages before absl', 'absl::InitializeLog',
         'Traceback (most recent call last)', 'File "', 'tf.function',
         'retracing', '^^^', 'PredictCost', 'local_rendezvous',
         'Local rendezvous', '[[{{')
LOG_PREFIX = re.compile(r'^[IWEF]\d{4} [\d:.]+\s+\d+ [^\]]*\] ')
STEP_LINE = re.compile(r'^step (\d+)/(\d+)\s')
RESUMED = re.compile(r'resumed from (\S+) at step (\d+)')


@dataclasses.dataclass
class Row:
  """One hostile-input class as it went."""
  item: int  # of issue 20
  input: str  # what was tried, through which tool
  outcome: str  # exit code, or what the signature did
  message: str  # the first line naming the problem, clipped
  lost: str  # results, checkpoints or files lost ('no: ...' if none)


@dataclasses.dataclass
class Run:
  """A finished tool process."""
  command: list[str]
  returncode: int
  stdout: str
  stderr: str
  peak_rss_mb: float
  seconds: float

  @property
  def outcome(self) -> str:
    return exit_text(self.returncode)

  def line(self, *needles: str) -> str:
    """The whole first line (stderr first) naming one of `needles`, or
    ''."""
    return first_line(self.stderr + '\n' + self.stdout, *needles)

  def message(self, *needles: str) -> str:
    """The first line (stderr first) naming one of `needles`; else, after
    a failure, the last meaningful line of stderr (a traceback's error),
    after a success '(none)'."""
    return problem_line(self.stderr + '\n' + self.stdout, *needles,
                        fallback=(self.stderr or self.stdout) if
                        self.returncode else '(none)')


@dataclasses.dataclass
class Context:
  """What the cases share: this run's folder, the data, the model."""
  work: str
  shapes: str = ''  # make_shapes root: train/, val/
  train_json: str = ''  # shapes train + extreme aspect ratios
  model_dir: str = ''  # the tiny trained run ('' if training failed)
  export_dir: str = ''  # its SavedModel ('' if export failed)
  why_no_model: str = 'not trained yet'
  signatures: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    SHORTEN.insert(0, os.path.join(self.work, ''))

  def folder(self, name: str) -> str:
    path = os.path.join(self.work, name)
    os.makedirs(path, exist_ok=True)
    return path

  @property
  def train_images(self) -> str:
    return os.path.join(self.shapes, 'train', 'images')

  @property
  def val(self) -> tuple[str, str]:
    return (os.path.join(self.shapes, 'val', 'annotations.json'),
            os.path.join(self.shapes, 'val', 'images'))


# --- running tools and reading what they said ------------------------------


def exit_text(code: int | None) -> str:
  if code is None:
    return 'still running'
  if code < 0:
    return f'killed by {signal.Signals(-code).name}'
  return f'exit {code}'


def tool(name: str, *args: str, timeout: float = 600,
         preexec_fn=None) -> Run:
  """Runs bin/`name` with `args` to the end (killed after `timeout` s);
  returns its exit, output and peak RSS (its own: wait4's rusage)."""
  command = [sys.executable, os.path.join(REPO, 'bin', name), *args]
  return run_command(command, timeout, preexec_fn)


# Runs argv[2:] as its child and writes "<exit code> <peak RSS KB>" to
# argv[1]. Linux counts into a process's peak RSS the peak of the process it
# was forked from (the copied memory map's high-water mark survives exec):
# a tool started straight from this script, which holds TensorFlow and a
# SavedModel, would report this script's RSS. Started from this small
# process instead, it reports its own.
SPAWN = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], 'w') as f:
  f.write(f'{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}')
"""


def run_command(command: list[str], timeout: float = 600,
                preexec_fn=None) -> Run:
  """Runs `command` (through SPAWN, for its own peak RSS) to the end,
  killed with its process group after `timeout` s."""
  start = time.monotonic()
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
      tempfile.NamedTemporaryFile('r') as result:
    process = subprocess.Popen(
        [sys.executable, '-c', SPAWN, result.name, *command], cwd=REPO,
        stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        preexec_fn=preexec_fn, start_new_session=True)
    timer = threading.Timer(
        timeout, lambda: os.killpg(process.pid, signal.SIGKILL))
    timer.start()
    try:
      process.wait()
    finally:
      timer.cancel()
    fields = result.read().split()
    returncode, peak_kb = ((int(fields[0]), int(fields[1])) if fields else
                           (process.returncode, 0))
    texts = []
    for handle in (out, err):
      handle.seek(0)
      texts.append(handle.read().decode('utf-8', 'replace'))
  return Run(command, returncode, texts[0], texts[1], peak_kb / 1024,
             time.monotonic() - start)


# Folders left out of messages (this run's, the repository's): the table
# shows file names, not the temporary paths they had.
SHORTEN = [REPO + os.sep]


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
  for prefix in SHORTEN:
    text = text.replace(prefix, '')
  # A problem line starting with its image's path: the file name is enough
  # (the input column says where it was).
  text = re.sub(r'^(skipping |skipped or repaired: )?\S*/([^/\s:]+): ',
                r'\1\2: ', text.strip())
  text = ' '.join(text.split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def meaningful_lines(text: str) -> list[str]:
  """The lines of a tool's output without log prefixes and TensorFlow's
  start-up chatter."""
  lines = []
  for line in text.splitlines():
    line = LOG_PREFIX.sub('', line).strip()
    if line and not any(noise in line for noise in NOISE):
      lines.append(line)
  return lines


def first_line(text: str, *needles: str) -> str:
  """The first meaningful line of `text` containing the first of `needles`
  that any line contains (needles in order of preference), or ''."""
  lines = meaningful_lines(text)
  for needle in needles:
    for line in lines:
      if needle in line:
        return line
  return ''


def problem_line(text: str, *needles: str, fallback: str = '') -> str:
  """The first line of `text` containing one of `needles`; else the last
  meaningful line of `fallback` (a traceback's last line is its error);
  clipped. '-' when there is none."""
  line = first_line(text, *needles)
  if line:
    return clip(line)
  if fallback == '(none)':
    return fallback
  rest = meaningful_lines(fallback)
  return clip(rest[-1]) if rest else '-'


def tf_error_text(error: Exception) -> str:
  """A TensorFlow error as its client sees it, without graph boilerplate:
  an assertion's own message where there is one."""
  message = getattr(error, 'message', None) or str(error)
  match = re.search(r'assertion failed: \[(.*)\]', message)
  if match:
    return clip(match.group(1))
  message = re.sub(r'\[\[.*?\]\]|\{\{.*?\}\}|\[Op:[^\]]*\]', '', message)
  return problem_line(message, fallback='') if message.strip() else '-'


def log(text: str) -> None:
  print(f'[hostile_inputs {time.strftime("%H:%M:%S")}] {text}',
        file=sys.stderr, flush=True)


# --- inputs ----------------------------------------------------------------


def write_image(path: str, height: int, width: int, seed: int = 0,
                fmt: str = 'PNG') -> str:
  """Random pixels (a seeded pattern: each file its own bytes)."""
  pixels = np.random.default_rng(seed).integers(
      0, 256, (height, width, 3), dtype=np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path, fmt)
  return path


def encoded_image(height: int, width: int, seed: int = 0,
                  fmt: str = 'PNG') -> bytes:
  buffer = io.BytesIO()
  pixels = np.random.default_rng(seed).integers(
      0, 256, (height, width, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(buffer, fmt)
  return buffer.getvalue()


def png_bomb(height: int, width: int) -> bytes:
  """A valid grayscale PNG of black pixels: a few hundred KB that decode
  to height x width x 3 bytes of RGB."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data)))
  compress = zlib.compressobj(9)
  row = bytes(width + 1)  # The filter byte, then the row's pixels.
  idat = b''.join(compress.compress(row) for _ in range(height))
  idat += compress.flush()
  header = struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) +
          chunk(b'IDAT', idat) + chunk(b'IEND', b''))


@functools.lru_cache(maxsize=1)
def bomb() -> bytes:
  """The issue's decompression bomb: 20000 x 20000 pixels."""
  return png_bomb(20000, 20000)


def bomb_text() -> str:
  return f'20000x20000 PNG of {len(bomb()) // 1024} KB'


def box_annotation(annotation_id: int, image_id: int, category_id: int,
                   top: float, left: float, bottom: float, right: float
                   ) -> dict:
  return {'id': annotation_id, 'image_id': image_id,
          'category_id': category_id, 'iscrowd': 0,
          'area': (bottom - top) * (right - left),
          'bbox': [left, top, right - left, bottom - top],
          'segmentation': [[left, top, right, top, right, bottom, left,
                            bottom]]}


def write_coco(path: str, images: list[tuple], annotations: list[dict],
               categories: list[dict] | None = None) -> str:
  """images: (id, file_name, height, width) tuples."""
  data = {'images': [{'id': i, 'file_name': name, 'height': h, 'width': w}
                     for i, name, h, w in images],
          'annotations': annotations,
          'categories': categories or [{'id': 1, 'name': 'thing'}]}
  with open(path, 'w') as f:
    json.dump(data, f)
  return path


def one_box_set(folder: str, images: list[tuple], category_id: int = 1,
                categories: list[dict] | None = None) -> str:
  """annotations.json in `folder` with one box (the image's left half) per
  image; images: (id, file_name, height, width)."""
  annotations = [box_annotation(i, i, category_id, 0, 0, h, max(w / 2, 1))
                 for i, _, h, w in images]
  return write_coco(os.path.join(folder, 'annotations.json'), images,
                    annotations, categories)


EXTREME = (('wide_2x1000.png', 2, 1000), ('thin_1x4000.png', 1, 4000),
           ('tall_4000x1.png', 4000, 1))


def make_data(ctx: Context) -> None:
  """The shapes set (5 train, 5 val images) and a training json of the
  shapes train images plus the EXTREME aspect ratios, with a box each."""
  from masklab_tf.data import synthetic
  ctx.shapes = os.path.join(ctx.work, 'shapes')
  synthetic.make_shapes(ctx.shapes, num_train=5, num_val=NUM_GOOD, seed=0)
  with open(os.path.join(ctx.shapes, 'train', 'annotations.json')) as f:
    data = json.load(f)
  next_image = max(i['id'] for i in data['images']) + 1
  next_annotation = max(a['id'] for a in data['annotations']) + 1
  for offset, (name, height, width) in enumerate(EXTREME):
    write_image(os.path.join(ctx.train_images, name), height, width,
                seed=offset)
    image_id = next_image + offset
    data['images'].append({'id': image_id, 'file_name': name,
                           'height': height, 'width': width})
    data['annotations'].append(box_annotation(
        next_annotation + offset, image_id, data['categories'][0]['id'], 0,
        0, height, width / 2 if width > 1 else 1))
  ctx.train_json = os.path.join(ctx.shapes, 'train', 'with_extremes.json')
  with open(ctx.train_json, 'w') as f:
    json.dump(data, f)


def train_args(ctx: Context, model_dir: str, annotations: str = '',
               steps: int = TRAIN_STEPS) -> list[str]:
  return [f'--flagfile={FLAGFILE}', *TINY, f'--train_steps={steps}',
          f'--model_dir={model_dir}',
          f'--train_annotations={annotations or ctx.train_json}',
          f'--train_images={ctx.train_images}']


# --- item 1, 2, 5, 12: bin/check_dataset and bin/make_tfrecords ------------


def case_extreme_aspect_check(ctx: Context) -> list[Row]:
  """Item 1: 2x1000, 1x4000 and 4000x1 images through check_dataset."""
  folder = ctx.folder('extreme_check')
  images = []
  for index, (name, height, width) in enumerate(EXTREME, start=1):
    write_image(os.path.join(folder, 'images', name), height, width, index)
    images.append((index, name, height, width))
  run = tool('check_dataset', f'--annotations={one_box_set(folder, images)}',
             f'--images={os.path.join(folder, "images")}')
  counts = problem_line(run.stdout, 'images=')
  kept = re.search(r'images=(\d+)', counts)
  return [Row(1, 'check_dataset: images of 2x1000, 1x4000, 4000x1 px, a '
              'box each', run.outcome,
              run.message(*(name for name, _, _ in EXTREME), 'error'),
              f'kept {kept.group(1) if kept else "?"} of 3 ({counts})')]


def case_bomb_check(ctx: Context) -> list[Row]:
  """Item 2: a 20000x20000 PNG in a COCO set: check_dataset names it and
  the pixel limit that applied."""
  folder = ctx.folder('bomb_check')
  os.makedirs(os.path.join(folder, 'images'))
  with open(os.path.join(folder, 'images', 'bomb.png'), 'wb') as f:
    f.write(bomb())
  write_image(os.path.join(folder, 'images', 'good.png'), 40, 60, 1)
  annotations = one_box_set(folder, [(1, 'good.png', 40, 60),
                                     (2, 'bomb.png', 20000, 20000)])
  run = tool('check_dataset', f'--annotations={annotations}',
             f'--images={os.path.join(folder, "images")}')
  counts = problem_line(run.stdout, 'images=')
  return [
      Row(2, f'check_dataset: a {bomb_text()} in a set',
          run.outcome + (', skipped' if 'skipped' in run.line('bomb.png')
                         else ''),
          run.message('bomb.png'), f'no: the good image kept ({counts})'),
      Row(2, 'check_dataset: which pixel limit applied (same run)',
          'printed' if 'pixel limit' in run.stdout else 'not printed',
          problem_line(run.stdout, 'pixel limit'), '-'),
  ]


def case_paths_outside_images(ctx: Context) -> list[Row]:
  """Item 5: file_names that leave --images (`../x.png`, an absolute path,
  a symlink inside pointing out), through check_dataset (with and without
  --allow_outside_images) and make_tfrecords."""
  folder = ctx.folder('outside')
  images = os.path.join(folder, 'images')
  elsewhere = os.path.join(folder, 'elsewhere')
  write_image(os.path.join(images, 'good.png'), 40, 60, 1)
  secrets = {}
  for seed, name in enumerate(('relative.png', 'absolute.png', 'linked.png'),
                              start=2):
    secrets[name] = write_image(os.path.join(elsewhere, name), 40, 60, seed)
  os.symlink(secrets['linked.png'], os.path.join(images, 'link.png'))
  entries = [
      ('`../x.png` (file_name ../elsewhere/relative.png)',
       '../elsewhere/relative.png', 'relative.png'),
      ('absolute path (file_name /.../elsewhere/absolute.png)',
       secrets['absolute.png'], 'absolute.png'),
      ('symlink inside --images to a file outside (link.png)', 'link.png',
       'link.png'),
  ]
  annotations = one_box_set(folder, [(1, 'good.png', 40, 60)] + [
      (index, file_name, 40, 60)
      for index, (_, file_name, _) in enumerate(entries, start=2)])
  args = (f'--annotations={annotations}', f'--images={images}')
  run = tool('check_dataset', *args)
  counts = problem_line(run.stdout, 'images=')
  rows = []
  for description, _, needle in entries:
    line = run.line(needle)
    outcome = run.outcome + (', skipped' if 'skipped' in line else ', read')
    rows.append(Row(5, f'check_dataset: {description}', outcome,
                    clip(line) if line else '(none)',
                    f'no: good.png kept ({counts})'))
  allowed = tool('check_dataset', *args, '--allow_outside_images')
  rows.append(Row(
      5, 'check_dataset --allow_outside_images on the same set',
      allowed.outcome + f' ({problem_line(allowed.stdout, "images=")})',
      allowed.message('outside_images'), '-'))
  prefix = os.path.join(folder, 'records', 'train')
  records = tool('make_tfrecords', *args, f'--output_prefix={prefix}',
                 '--num_shards=1')
  shards = b''
  for name in sorted(os.listdir(os.path.dirname(prefix))):
    if name.endswith('.tfrecord'):
      with open(os.path.join(os.path.dirname(prefix), name), 'rb') as f:
        shards += f.read()
  copied = [name for name, path in secrets.items()
            if open(path, 'rb').read() in shards]
  wrote = re.search(r'wrote (\d+) images', records.stdout)
  rows.append(Row(
      5, 'make_tfrecords on the same set',
      f'{records.outcome}: wrote {wrote.group(1) if wrote else "?"} images',
      records.message('relative.png', 'error'),
      'outside files copied into the TFRecords: ' +
      (', '.join(copied) if copied else 'none')))
  return rows


def case_check_dataset_says(ctx: Context) -> list[Row]:
  """Item 12: labelme's export (category 0 _background_) under --strict, a
  set whose every image is missing, an image with 120 instances."""
  rows = []
  folder = ctx.folder('labelme')
  write_image(os.path.join(folder, 'images', 'a.png'), 40, 60, 1)
  annotations = one_box_set(
      folder, [(1, 'a.png', 40, 60)],
      categories=[{'id': 0, 'name': '_background_'},
                  {'id': 1, 'name': 'shape'}])
  run = tool('check_dataset', f'--annotations={annotations}',
             f'--images={os.path.join(folder, "images")}', '--strict')
  rows.append(Row(12, "check_dataset --strict: labelme's COCO export "
                  '(category 0 _background_)', run.outcome,
                  run.message('background', 'error'),
                  'no: ' + problem_line(run.stdout, 'images=')))
  folder = ctx.folder('missing')
  annotations = one_box_set(folder, [(i, f'gone_{i}.png', 40, 60)
                                     for i in (1, 2, 3)])
  run = tool('check_dataset', f'--annotations={annotations}',
             f'--images={os.path.join(folder, "images")}')
  rows.append(Row(12, 'check_dataset: every image file missing (3 of 3)',
                  run.outcome, run.message('error', 'no usable'),
                  'nothing to lose: ' + problem_line(run.stdout,
                                                     'images=')))
  folder = ctx.folder('crowded')
  write_image(os.path.join(folder, 'images', 'a.png'), 200, 200, 1)
  annotations = [box_annotation(i + 1, 1, 1, (i // 12) * 20,
                                (i % 12) * 16, (i // 12) * 20 + 10,
                                (i % 12) * 16 + 10) for i in range(120)]
  path = write_coco(os.path.join(folder, 'annotations.json'),
                    [(1, 'a.png', 200, 200)], annotations)
  run = tool('check_dataset', f'--annotations={path}',
             f'--images={os.path.join(folder, "images")}')
  rows.append(Row(12, 'check_dataset: one image with 120 instances (a '
                  'note)', run.outcome, run.message('many_instances'),
                  'no: ' + problem_line(run.stdout, 'images=')))
  return rows


# --- items 7, 9: what bin/train refuses at the start -----------------------


def case_classes_and_empty_sets(ctx: Context) -> list[Row]:
  """Item 7: more categories than --num_classes; a set whose every
  annotation is skipped."""
  rows = []
  annotations = os.path.join(ctx.shapes, 'train', 'annotations.json')
  model_dir = os.path.join(ctx.work, 'train_classes')
  run = tool('train', *train_args(ctx, model_dir, annotations, steps=1),
             '--num_classes=2')
  rows.append(Row(7, 'bin/train --num_classes=2 on a set of 4 categories',
                  run.outcome, run.message('num_classes', 'label value',
                                           'rror'),
                  written(model_dir)))
  with open(annotations) as f:
    data = json.load(f)
  for annotation in data['annotations']:
    annotation['category_id'] = 99  # In no category: every one skipped.
  skipped = os.path.join(ctx.folder('all_skipped'), 'annotations.json')
  with open(skipped, 'w') as f:
    json.dump(data, f)
  model_dir = os.path.join(ctx.work, 'train_empty')
  run = tool('train', *train_args(ctx, model_dir, skipped, steps=1))
  rows.append(Row(7, 'bin/train on a set whose every annotation is skipped '
                  '(category 99)', run.outcome,
                  run.message('no instance', 'rror'), written(model_dir)))
  return rows


def written(model_dir: str) -> str:
  """What a refused run left in its model_dir."""
  if not os.path.exists(model_dir):
    return 'nothing written (no model_dir)'
  names = sorted(n for n in os.listdir(model_dir) if n != '.lock')
  return ('nothing written' if not names else
          'wrote ' + clip(', '.join(names), 60)) + ' in model_dir'


@contextlib.contextmanager
def read_only_folder(parent: str):
  """Yields (a folder no one may write into, how), or (None, why not)."""
  path = os.path.join(parent, 'read_only')
  os.makedirs(path)
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    try:
      yield path, 'chmod 555'
    finally:
      os.chmod(path, 0o755)
    return
  mounted = subprocess.run(['mount', '--bind', path, path],
                           capture_output=True).returncode == 0
  if mounted and subprocess.run(
      ['mount', '-o', 'remount,bind,ro', path],
      capture_output=True).returncode == 0:
    try:
      yield path, 'a read-only bind mount (root ignores chmod)'
    finally:
      subprocess.run(['umount', path], check=False)
    return
  if mounted:
    subprocess.run(['umount', path], check=False)
  yield None, 'not tried: root ignores chmod, and mounting is not allowed'


def case_unwritable_model_dir(ctx: Context) -> list[Row]:
  """Item 9: a model_dir below a file, and a read-only one, before any
  data is read (the training json does not even exist)."""
  folder = ctx.folder('unwritable')
  blocker = os.path.join(folder, 'a_file')
  with open(blocker, 'w') as f:
    f.write('not a folder')
  missing = os.path.join(folder, 'missing.json')
  rows = []
  model_dir = os.path.join(blocker, 'model')
  run = tool('train', *train_args(ctx, model_dir, missing))
  rows.append(Row(9, '--model_dir below a file (training json missing too)',
                  run.outcome, run.message('model_dir', 'rror'), '-'))
  with read_only_folder(folder) as (path, how):
    if path is None:
      rows.append(Row(9, 'read-only --model_dir', how, '-', '-'))
    else:
      run = tool('train', *train_args(ctx, path, missing))
      rows.append(Row(9, f'read-only --model_dir ({how})', run.outcome,
                      run.message('model_dir', 'rror'), '-'))
  return rows


# --- items 1, 8: the tiny model, trained as a user would ------------------


def wait_for(condition, timeout: float, poll: float = 0.2) -> bool:
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if condition():
      return True
    time.sleep(poll)
  return condition()


def lock_holder(model_dir: str) -> str:
  try:
    with open(os.path.join(model_dir, '.lock')) as f:
      return f.read().strip()
  except OSError:
    return ''


def read(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return ''


def last_step(text: str) -> int:
  steps = [int(m.group(1)) for m in map(STEP_LINE.match, text.splitlines())
           if m]
  return steps[-1] if steps else 0


def train_model(ctx: Context) -> list[Row]:
  """Items 1 and 8: trains the tiny model on the shapes set with the
  EXTREME images; while it trains, a second bin/train on its model_dir;
  then SIGKILLs it after its first checkpoint and starts it again (a lock
  left by a killed process). Sets ctx.model_dir."""
  model_dir = os.path.join(ctx.work, 'model')
  command = [sys.executable, os.path.join(REPO, 'bin', 'train'),
             *train_args(ctx, model_dir)]
  log_path = os.path.join(ctx.work, 'train_first.log')
  rows = []
  with open(log_path, 'w') as log_file:
    first = subprocess.Popen(command, cwd=REPO, stdout=log_file,
                             stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    try:
      wait_for(lambda: (lock_holder(model_dir).startswith('PID') or
                        'initialised' in read(log_path) or
                        first.poll() is not None), 300)
      second = tool('train', *train_args(ctx, model_dir, steps=1))
      still = first.poll() is None
      rows.append(Row(
          8, 'a second bin/train on the --model_dir of a running one',
          second.outcome, second.message('in use', 'rror'),
          ('no: the first trains on' if still else
           f'first ended meanwhile ({exit_text(first.returncode)})') +
          ('; the second wrote checkpoints' if second.returncode == 0
           else '')))
      # Killed once its first checkpoint after a step is complete.
      wait_for(lambda: (last_step(read(log_path)) >= 2 and os.path.exists(
          os.path.join(model_dir, 'checkpoint')) or
                        first.poll() is not None), 600)
      killed_at = last_step(read(log_path))
      if first.poll() is None:
        first.send_signal(signal.SIGKILL)
      first.wait()
    finally:
      if first.poll() is None:
        first.kill()
        first.wait()
  first_log = read(log_path)
  if first.returncode != -signal.SIGKILL:
    rows.append(Row(1, 'bin/train on shapes + 2x1000, 1x4000, 4000x1 images',
                    exit_text(first.returncode),
                    problem_line(first_log, 'rror', fallback=first_log),
                    f'trained {last_step(first_log)} of {TRAIN_STEPS} steps'))
    return rows + train_plain(ctx, model_dir)
  last = checkpoint_named(model_dir)
  again = tool('train', *train_args(ctx, model_dir))
  resumed = RESUMED.search(again.stdout + again.stderr)
  rows.append(Row(
      8, f'bin/train again after the first was SIGKILLed (step {killed_at}) '
      'holding the lock', again.outcome,
      again.message('taking over', 'lock', 'rror'),
      (f'no: resumed at step {resumed.group(2)} from {last or "nothing"} '
       '(its last checkpoint), ' if resumed else 'not resumed: ') +
      f'reached {last_step(again.stdout)}/{TRAIN_STEPS}'))
  with open(ctx.train_json) as f:
    set_size = len(json.load(f)['images'])
  start = int(resumed.group(2)) if resumed else 0
  reached = last_step(again.stdout)
  seen = 2 * (reached - start)  # TINY's --batch_size=2.
  rows.append(Row(
      1, f'bin/train on {set_size - len(EXTREME)} shapes + 2x1000, 1x4000, '
      '4000x1 images (the resumed run)', again.outcome,
      again.message('output dimensions', 'rror'),
      ('no' if again.returncode == 0 else 'yes: it failed') +
      f': steps {start + 1}-{reached} drew {seen} images of the '
      f'{set_size}-image set (shuffled, then repeated: ' +
      ('every image seen)' if seen >= set_size else 'not all seen)')))
  if again.returncode == 0:
    ctx.model_dir = model_dir
  else:
    rows += train_plain(ctx, os.path.join(ctx.work, 'model_plain'))
  return rows


def train_plain(ctx: Context, model_dir: str) -> list[Row]:
  """The fallback model: the shapes set alone (when training with the
  extreme images failed)."""
  run = tool('train', *train_args(
      ctx, model_dir, os.path.join(ctx.shapes, 'train', 'annotations.json')))
  if run.returncode == 0:
    ctx.model_dir = model_dir
  else:
    ctx.why_no_model = f'training failed: {run.message("rror")}'
  return []


# --- item 11: bin/export and bin/evaluate as the README runs them ---------


def export_model(ctx: Context) -> list[Row]:
  """Item 11: bin/export as the README shows it (the flagfile, not the
  run's TINY overrides). Sets ctx.export_dir (exported with the run's
  flags given again when the README's way fails)."""
  if not ctx.model_dir:
    return [Row(11, 'bin/export as the README shows it', 'not run',
                ctx.why_no_model, '-')]
  export_dir = os.path.join(ctx.work, 'export', '1')
  run = tool('export', f'--flagfile={FLAGFILE}',
             f'--model_dir={ctx.model_dir}', f'--export_dir={export_dir}')
  lost = ''
  if run.returncode != 0:
    # A second try of its own: what the failed one left stays to be seen.
    export_dir = os.path.join(ctx.work, 'export_with_run_flags', '1')
    retry = tool('export', f'--flagfile={FLAGFILE}', *TINY,
                 f'--model_dir={ctx.model_dir}',
                 f'--export_dir={export_dir}',
                 f'--categories={ctx.train_json}')
    lost = ('yes: exported only with the training flags and --categories '
            'given again' if retry.returncode == 0 else
            f'yes: no export ({retry.message("rror")})')
  if os.path.exists(os.path.join(export_dir, 'saved_model.pb')):
    ctx.export_dir = export_dir
    names = [c['name'] for c in json.loads(read(os.path.join(
        export_dir, 'assets', 'categories.json')) or '[]')]
    lost = lost or ('no: class names kept (' + ', '.join(names) + ')'
                    if names else 'yes: no class names in the SavedModel')
  else:
    ctx.why_no_model = 'export failed'
  return [Row(11, 'bin/export --flagfile=configs/shapes_cpu.flags '
              '--model_dir=RUN (run trained with other flags)',
              run.outcome, run.message('trained with', 'override',
                                       'rror'), lost)]


def case_evaluate_as_readme(ctx: Context) -> list[Row]:
  """Item 11: bin/evaluate as the README shows it, on the same run."""
  if not ctx.model_dir:
    return [Row(11, 'bin/evaluate as the README shows it', 'not run',
                ctx.why_no_model, '-')]
  annotations, images = ctx.val
  output = os.path.join(ctx.work, 'evaluate')
  run = tool('evaluate', f'--flagfile={FLAGFILE}',
             f'--model_dir={ctx.model_dir}', f'--annotations={annotations}',
             f'--images={images}', f'--output_dir={output}')
  metrics = os.path.exists(os.path.join(output, 'metrics.json'))
  return [Row(11, 'bin/evaluate --flagfile=configs/shapes_cpu.flags '
              '--model_dir=RUN (run trained with other flags)',
              run.outcome, run.message('trained with', 'override', 'rror'),
              'no: metrics.json written' if metrics else
              'yes: no metrics.json')]


# --- items 1, 2, 4, 10: the SavedModel's signatures -----------------------


def signature(ctx: Context, name: str):
  """A signature of the exported model, loaded once (plain TensorFlow)."""
  if name not in ctx.signatures:
    import tensorflow as tf
    loaded = tf.saved_model.load(ctx.export_dir)
    ctx.signatures['_loaded'] = loaded  # Keeps the variables alive.
    for key in ('serving_default', 'serving_encoded'):
      ctx.signatures[key] = loaded.signatures[key]
  return ctx.signatures[name]


def call(ctx: Context, name: str, value) -> tuple[dict | None, str]:
  """(outputs as numpy, '') or (None, the error as the client sees it)."""
  import tensorflow as tf
  try:
    key = 'encoded' if name == 'serving_encoded' else 'images'
    outputs = signature(ctx, name)(**{key: tf.constant(value)})
    return {k: v.numpy() for k, v in outputs.items()}, ''
  except (tf.errors.OpError, ValueError, TypeError) as error:
    return None, tf_error_text(error)


def served_text(outputs: dict | None, error: str) -> str:
  if outputs is None:
    return 'request refused'
  return (f'served: semantic_map {tuple(outputs["semantic_map"].shape)}, '
          f'{int(outputs["num_detections"].sum())} detections')


def no_model_row(ctx: Context, item: int, what: str) -> list[Row]:
  return [Row(item, what, 'not run', ctx.why_no_model, '-')]


def case_extreme_aspect_serving(ctx: Context) -> list[Row]:
  """Item 1: the extreme aspect ratios through both signatures."""
  if not ctx.export_dir:
    return no_model_row(ctx, 1, 'extreme aspect ratios served')
  batch = [encoded_image(2, 1000, 1), encoded_image(1, 4000, 2),
           encoded_image(160, 160, 3)]
  outputs, error = call(ctx, 'serving_encoded', batch)
  rows = [Row(1, 'serving_encoded: [2x1000, 1x4000, 160x160] PNGs',
              served_text(outputs, error), error or '(none)', '-')]
  for height, width in ((1, 4000), (4000, 1)):
    pixels = np.asarray(Image.open(io.BytesIO(encoded_image(height, width,
                                                            4))))
    outputs, error = call(ctx, 'serving_default', pixels[np.newaxis])
    rows.append(Row(1, f'serving_default: uint8 [1, {height}, {width}, 3]',
                    served_text(outputs, error), error or '(none)', '-'))
  return rows


def peak_rss_reset() -> bool:
  """Resets this process's peak RSS (Linux); False where it cannot."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def rss_mb(field: str = 'VmHWM') -> float:
  match = re.search(rf'{field}:\s+(\d+) kB', read('/proc/self/status'))
  return int(match.group(1)) / 1024 if match else float('nan')


def case_bomb_serving(ctx: Context) -> list[Row]:
  """Item 2: a 20000x20000 PNG in a batch of serving_encoded, and an
  uint8 image over the limit to serving_default."""
  if not ctx.export_dir:
    return no_model_row(ctx, 2, 'decompression bomb served')
  rows = []
  small = [encoded_image(30, 40, 1), encoded_image(40, 30, 2)]
  signature(ctx, 'serving_encoded')  # Loaded before the measurement.
  measured = peak_rss_reset()
  before = rss_mb('VmRSS')
  outputs, error = call(ctx, 'serving_encoded', [small[0], bomb(), small[1]])
  grew = rss_mb() - before
  after, after_error = call(ctx, 'serving_encoded', small)
  rows.append(Row(
      2, f'serving_encoded: [30x40, {bomb_text()}, 40x30]',
      served_text(outputs, error) + (f'; peak RSS +{grew:.0f} MB' if
                                     measured else ''),
      error or '(none)',
      'no: the two small ones served next' if after is not None else
      f'yes: the next request failed too ({after_error})'))
  big = np.zeros([1, 6400, 6400, 3], np.uint8)
  outputs, error = call(ctx, 'serving_default', big)
  rows.append(Row(2, 'serving_default: uint8 [1, 6400, 6400, 3] (41 MP)',
                  served_text(outputs, error), error or '(none)', '-'))
  return rows


def case_batch_elements(ctx: Context) -> list[Row]:
  """Item 4: one bad element in a batch of 16, and requests of the wrong
  rank, to both signatures."""
  if not ctx.export_dir:
    return no_model_row(ctx, 4, 'bad batch elements')
  formats = ('PNG', 'JPEG', 'PNG', 'BMP')
  good = [encoded_image(40 + i, 50, i, formats[i % 4]) for i in range(16)]
  rows = []
  served, _ = call(ctx, 'serving_encoded', good[:2] + good[3:11] + good[12:])
  survived = ('no: the 14 good ones served in the next request' if
              served is not None else 'yes: the good ones were refused too')
  for index, bad, what in ((11, b'not an image', "b'not an image'"),
                           (2, good[2][:len(good[2]) // 2],
                            'a PNG cut in half')):
    batch = list(good)
    batch[index] = bad
    outputs, error = call(ctx, 'serving_encoded', batch)
    rows.append(Row(4, f'serving_encoded: batch of 16 PNG / JPEG / BMP, '
                    f'element {index}: {what}', served_text(outputs, error),
                    error or '(none)', survived))
  for name, value, what in (
      ('serving_encoded', good[0], 'one string, not a [batch] vector'),
      ('serving_encoded', [[good[0]]], 'strings [1, 1]'),
      ('serving_default', np.zeros([40, 50, 3], np.uint8),
       'uint8 [40, 50, 3] (no batch dimension)'),
      ('serving_default', np.zeros([1, 40, 50, 4], np.uint8),
       'uint8 [1, 40, 50, 4] (RGBA)')):
    outputs, error = call(ctx, name, value)
    rows.append(Row(4, f'{name}: {what}', served_text(outputs, error),
                    error or '(none)', '-'))
  return rows


def match_detections(alone: dict, batch: dict) -> tuple[float, float]:
  """(max box shift in px, max score change) from each detection of the
  first image alone to its nearest unused one of the same class in the
  batch (near-equal scores may swap places: matched, not compared by
  rank). inf where one has no counterpart."""
  count = int(alone['num_detections'][0])
  count_batch = int(batch['num_detections'][0])
  boxes = batch['detection_boxes'][0, :count_batch]
  classes = batch['detection_classes'][0, :count_batch]
  unused = set(range(count_batch))
  shift = change = 0.0
  for i in range(count):
    candidates = [j for j in unused
                  if classes[j] == alone['detection_classes'][0, i]]
    if not candidates:
      return float('inf'), float('inf')
    distance = {j: float(np.abs(boxes[j] - alone['detection_boxes'][0, i])
                         .max()) for j in candidates}
    j = min(candidates, key=distance.get)
    unused.remove(j)
    shift = max(shift, distance[j])
    change = max(change, abs(float(batch['detection_scores'][0, j] -
                                   alone['detection_scores'][0, i])))
  return shift, change


def case_batch_companions(ctx: Context) -> list[Row]:
  """Item 10: a 120x160 image served alone and in a batch with a larger
  (160x160) one through serving_encoded of the trained model."""
  if not ctx.export_dir:
    return no_model_row(ctx, 10, 'batch companions')
  _, images = ctx.val
  names = sorted(os.listdir(images))
  first = np.asarray(Image.open(os.path.join(images, names[0])).convert(
      'RGB'))[:120]
  buffer = io.BytesIO()
  Image.fromarray(first).save(buffer, 'PNG')
  image = buffer.getvalue()
  with open(os.path.join(images, names[1]), 'rb') as f:
    larger = f.read()
  alone, error = call(ctx, 'serving_encoded', [image])
  again, _ = call(ctx, 'serving_encoded', [image])
  batch, batch_error = call(ctx, 'serving_encoded', [image, larger])
  if alone is None or batch is None:
    return [Row(10, 'an image alone and in a batch with a larger one',
                'request refused', error or batch_error, '-')]
  count = int(alone['num_detections'][0])
  count_batch = int(batch['num_detections'][0])
  shift, change = match_detections(alone, batch)
  # The control: the same request twice (run-to-run noise, if any).
  noise = max(match_detections(alone, again)) if again is not None else -1
  differ = [what for what, bad in (
      ('the number of detections', count != count_batch),
      ('boxes by > 0.5 px', shift > 0.5),
      ('scores by > 1e-3', change > 1e-3)) if bad]
  return [Row(10, 'serving_encoded: a 120x160 shapes image alone, then in '
              'a batch with a 160x160 one (trained model)',
              f'{count} vs {count_batch} detections; max box shift '
              f'{shift:.3g} px, max score change {change:.3g} (each '
              'detection to its nearest of its class; alone twice: '
              f'{noise:.3g})', '(none)',
              'no: the same detections (within 0.5 px, 1e-3)' if not differ
              else 'yes: the batch changes ' + ', '.join(differ))]


# --- items 1, 2, 3: bin/predict on a folder with hostile files ------------


def case_predict_folder(ctx: Context) -> list[Row]:
  """Items 1, 2, 3: bin/predict on 5 good images, an undecodable file, a
  20000x20000 PNG, a 1x4000 image and a 7000x6000 one that passes
  --max_image_pixels=100000000 but not the SavedModel's 40 MP (the model
  fails on it inside a batch of 3)."""
  if not ctx.export_dir:
    return no_model_row(ctx, 3, 'bin/predict on a folder with bad files')
  folder = ctx.folder('predict_in')
  _, val_images = ctx.val
  good = sorted(os.listdir(val_images))[:NUM_GOOD]
  for name in good:
    shutil.copy(os.path.join(val_images, name), folder)
  with open(os.path.join(folder, 'bomb.png'), 'wb') as f:
    f.write(bomb())
  with open(os.path.join(folder, 'corrupt.png'), 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + b'garbage' * 100)
  write_image(os.path.join(folder, 'wide.png'), 1, 4000, 3)
  Image.new('RGB', (6000, 7000)).save(os.path.join(folder, 'big.png'))
  output = os.path.join(ctx.work, 'predict_out')
  run = tool('predict', f'--saved_model={ctx.export_dir}',
             f'--images={folder}', f'--output_dir={output}',
             '--batch_size=4', '--max_image_pixels=100000000')
  paths = sorted(os.listdir(folder))  # bin/predict's ids: 1.. in order.
  ids = {name: index for index, name in enumerate(paths, start=1)}
  try:
    with open(os.path.join(output, 'results.json')) as f:
      results = json.load(f)
  except (OSError, ValueError):
    results = None
  predicted = {name for name in paths if re.search(
      rf'{re.escape(name)}: \d+ detections', run.stdout)}
  if results is None:
    kept = 'yes: no results.json'
  else:
    with_results = {r['image_id'] for r in results}
    kept_good = sum(ids[name] in with_results for name in good)
    kept = (f'{"no" if kept_good == len(good) else "yes"}: results.json '
            f'holds {kept_good} of {len(good)} good images '
            f'({len(results)} detections)')
  rows = [Row(3, f'bin/predict --batch_size=4 on a folder: {len(good)} good '
              'images + the 4 files below', run.outcome +
              f' ({len(predicted)} predicted, peak RSS '
              f'{run.peak_rss_mb:.0f} MB)',
              problem_line(run.stdout, '; ', fallback=run.stderr), kept)]
  for item, name, what in (
      (3, 'corrupt.png', 'a PNG signature then garbage'),
      (2, 'bomb.png', bomb_text()),
      (3, 'big.png', '7000x6000: under --max_image_pixels=1e8, over the '
       "SavedModel's 40 MP"),
      (1, 'wide.png', '1x4000 image')):
    done = name in predicted
    line = (problem_line(run.stdout, f'{name}:') if done else
            problem_line(run.stderr, f'{name}:'))
    outcome = ('predicted' if done else
               'skipped, named' if name in line else 'not named')
    if name == 'bomb.png':
      outcome += f' (the run\'s peak RSS {run.peak_rss_mb:.0f} MB)'
    lost = '-'
    if name == 'big.png':
      companions = batch_companions(run.stderr, paths, name, 4)
      lost = (('no' if set(companions) <= predicted else 'yes') +
              ': its batch companions ' + ', '.join(
                  f'{other} {"predicted" if other in predicted else "lost"}'
                  for other in companions))
    rows.append(Row(item, f'bin/predict: {name} ({what})', outcome, line,
                    lost))
  return rows


def batch_companions(stderr: str, names: list[str], name: str,
                     batch_size: int) -> list[str]:
  """The files that shared `name`'s batch in bin/predict: those not
  skipped before the model (unreadable, over the pixel limit), in order,
  --batch_size at a time."""
  early = {other for other in names if re.search(
      rf'skipping \S*{re.escape(other)}: (?!the model failed)', stderr)}
  queue = [other for other in names if other not in early]
  if name not in queue:
    return []
  start = queue.index(name) // batch_size * batch_size
  return [other for other in queue[start:start + batch_size]
          if other != name]


# --- item 9: a full disk --------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: str, size_kb: int):
  """Yields whether `path` is now a tmpfs of `size_kb` (root only)."""
  os.makedirs(path)
  mounted = os.geteuid() == 0 and subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', f'size={size_kb}k', 'tmpfs', path],
      capture_output=True).returncode == 0
  try:
    yield mounted
  finally:
    if mounted:
      subprocess.run(['umount', path], check=False)


def folder_kb(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names) // 1024


def checkpoint_named(model_dir: str) -> str:
  """The checkpoint the `checkpoint` state file names ('' if none)."""
  match = re.search(r'^model_checkpoint_path: "([^"]+)"',
                    read(os.path.join(model_dir, 'checkpoint')), re.M)
  return os.path.basename(match.group(1)) if match else ''


def case_full_disk(ctx: Context) -> list[Row]:
  """Item 9: the trained run continued on a filesystem with room for less
  than one more checkpoint (a tmpfs; without root, a file size limit),
  then continued again with room."""
  if not ctx.model_dir:
    return no_model_row(ctx, 9, 'full disk at a checkpoint save')
  data = [name for name in os.listdir(ctx.model_dir) if '.data-' in name]
  checkpoint_kb = max(os.path.getsize(os.path.join(ctx.model_dir, name))
                      for name in data) // 1024
  used = folder_kb(ctx.model_dir)
  mount = os.path.join(ctx.work, 'full_disk')
  steps = TRAIN_STEPS + 2
  with small_filesystem(mount, used + checkpoint_kb // 2 + 256) as mounted:
    model_dir = os.path.join(mount, 'model')
    shutil.copytree(ctx.model_dir, model_dir)
    kept = checkpoint_named(model_dir)
    args = [*train_args(ctx, model_dir, steps=steps), '--checkpoint_every=1']
    if mounted:
      how = 'tmpfs with room for half a checkpoint'
      full = tool('train', *args)
    else:
      how = f'file size limit {checkpoint_kb // 2} KB (RLIMIT_FSIZE)'
      limit = checkpoint_kb // 2 * 1024

      def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

      full = tool('train', *args, preexec_fn=limited)
    after = checkpoint_named(model_dir)
    partial = [n for n in os.listdir(model_dir) if n.endswith('_temp')]
    rows = [Row(9, f'disk full at a checkpoint save ({how})', full.outcome,
                full.message('cannot save', 'No space', 'too large',
                             'rror'),
                (f'no: "checkpoint" still names {after}' if after == kept
                 else f'"checkpoint" names {after or "nothing"} (was {kept})')
                + (f'; partial {", ".join(partial)} left' if partial else ''))]
    if mounted:
      subprocess.run(['mount', '-o', f'remount,size={used * 4 + 8192}k',
                      mount], check=False)
    again = tool('train', *args)
    resumed = RESUMED.search(again.stdout + again.stderr)
    left = [n for n in os.listdir(model_dir) if n.endswith('_temp')]
    rows.append(Row(
        9, 'bin/train again with room', again.outcome,
        again.message('removed', 'rror'),
        (f'no: resumed at step {resumed.group(2)}' if resumed else
         'not resumed') + f', reached {last_step(again.stdout)}/{steps}; '
        + ('partial save removed' if partial and not left else
           f'partial saves: {left or "none"}')))
  return rows


# --- item 6: memory against the annotation count --------------------------


def case_annotation_memory(ctx: Context) -> list[Row]:
  """Item 6: annotation_memory.measure(): peak RSS of a 3-step training on
  one 160x160 image with 10,000 annotations and with 5."""
  del ctx  # measure() works in a temporary folder of its own.
  # In a small process of its own: its bin/train processes would report
  # this script's RSS as their peak (SPAWN says why).
  run = run_command([sys.executable, '-c', (
      'import json\n'
      'from benchmarks import annotation_memory\n'
      'print(json.dumps(annotation_memory.measure(10_000, 5)))\n')])
  if run.returncode:
    raise RuntimeError(run.message('rror'))
  rows = json.loads(run.stdout.splitlines()[-1])
  control = rows[0]
  return [Row(6, 'bin/train 3 steps, one 160x160 image, '
              f'{row["annotations"]:,} annotations' +
              (' (control)' if row is control else ''),
              f'exit 0; peak RSS {row["peak_rss_mb"]:.0f} MB',
              '(none)',
              '-' if row is control else
              f'ratio to the control {row["ratio"]:.2f} (goal <= 1.5)')
          for row in rows]


# --- item 13: tools and benchmarks touch only what they made --------------


def case_two_tfrecord_writers(ctx: Context) -> list[Row]:
  """Item 13: two bin/make_tfrecords on one --output_prefix at once."""
  annotations = os.path.join(ctx.shapes, 'train', 'annotations.json')
  prefix = os.path.join(ctx.folder('two_writers'), 'train')
  command = [sys.executable, os.path.join(REPO, 'bin', 'make_tfrecords'),
             f'--annotations={annotations}', f'--images={ctx.train_images}',
             f'--output_prefix={prefix}', '--num_shards=2']
  runs = []
  threads = [threading.Thread(target=lambda: runs.append(
      run_command(command, 300))) for _ in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  folder = os.path.dirname(prefix)
  leftovers = [n for n in os.listdir(folder) if 'tmp' in n]
  import tensorflow as tf
  shards = tf.io.gfile.glob(prefix + '-*-of-*')
  try:
    count = sum(1 for _ in tf.data.TFRecordDataset(shards))
  except tf.errors.OpError as error:
    count = f'unreadable ({tf_error_text(error)})'
  with open(annotations) as f:
    images = len(json.load(f)['images'])
  lost = ('no' if count == images and not leftovers else 'yes') + (
      f': {len(shards)} shards hold {count} records of {images} images; '
      f'temporary files left: {len(leftovers)}')
  return [Row(13, 'two bin/make_tfrecords on one --output_prefix at once',
              ', '.join(run.outcome for run in runs),
              '; '.join(run.message('rror') if run.returncode else '(none)'
                        for run in runs), lost)]


def case_benchmark_work_dir(ctx: Context) -> list[Row]:
  """Item 13: benchmarks/chaos_train.py --work_dir=DIR where DIR holds the
  user's files (data/, model/, notes.txt): are they still there?"""
  user = ctx.folder('users_folder')
  mine = {os.path.join(user, 'notes.txt'): 'mine',
          os.path.join(user, 'data', 'annotations.json'): '{}',
          os.path.join(user, 'model', 'checkpoint'): 'my run'}
  for path, text in mine.items():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      f.write(text)
  run = run_command([sys.executable,
                     os.path.join(REPO, 'benchmarks', 'chaos_train.py'),
                     f'--work_dir={user}', '--kills=0', '--train_steps=2'],
                    timeout=600)
  intact = [path for path, text in mine.items() if read(path) == text]
  return [Row(13, 'benchmarks/chaos_train.py --work_dir=DIR, DIR holding '
              "the user's data/, model/, notes.txt", run.outcome,
              run.message('kept', 'rror') if run.returncode == 0 else
              run.message('rror'),
              ('no' if len(intact) == len(mine) else 'yes') +
              f": {len(intact)} of {len(mine)} of the user's files intact")]


# --- the table ------------------------------------------------------------

# (items, case): in the order they run. Cases after train_model need the
# model (rows saying so where there is none), so train_model and
# export_model are listed under every item whose cases need them (--items).
# A case that raises becomes a row saying so.
CASES = (
    ((1,), case_extreme_aspect_check),
    ((2,), case_bomb_check),
    ((5,), case_paths_outside_images),
    ((12,), case_check_dataset_says),
    ((7,), case_classes_and_empty_sets),
    ((9,), case_unwritable_model_dir),
    ((13,), case_two_tfrecord_writers),
    ((1, 8, 3, 9, 10, 11, 2, 4), train_model),
    ((11, 1, 2, 3, 4, 9, 10), export_model),
    ((11,), case_evaluate_as_readme),
    ((1,), case_extreme_aspect_serving),
    ((2,), case_bomb_serving),
    ((4,), case_batch_elements),
    ((10,), case_batch_companions),
    ((1, 2, 3), case_predict_folder),
    ((9,), case_full_disk),
    ((13,), case_benchmark_work_dir),
    ((6,), case_annotation_memory),
)


def run_cases(ctx: Context, items: set[int] | None = None) -> list[Row]:
  """Every case (of `items`, default all) in order; a case that raises is
  a row saying so."""
  rows = []
  for case_items, case in CASES:
    if items and not items & set(case_items):
      continue
    log(f'{case.__name__} (item {", ".join(map(str, case_items))})')
    start = time.monotonic()
    try:
      rows += case(ctx)
    except Exception as error:  # pylint: disable=broad-except
      rows.append(Row(case_items[0], case.__name__, 'case failed',
                      clip(f'{type(error).__name__}: {error}'), '?'))
    log(f'  {time.monotonic() - start:.0f} s')
  return sorted(rows, key=lambda row: row.item)  # Stable: run order kept.


def cell(text) -> str:
  return ' '.join(str(text).split()).replace('|', '\\|')


def markdown_table(rows: list[Row]) -> str:
  lines = ['| item | input | outcome | message shown | anything lost |',
           '|---:|---|---|---|---|']
  lines += [f'| {row.item} | {cell(row.input)} | {cell(row.outcome)} | '
            f'{cell(row.message)} | {cell(row.lost)} |' for row in rows]
  return '\n'.join(lines)


def header(command: str, seconds: float) -> str:
  from benchmarks import machine  # pylint: disable=g-import-not-at-top
  return (f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} '
          f'UTC; {machine.describe()}; `{command}`; {seconds / 60:.1f} min')


@contextlib.contextmanager
def work_folder(given: str | None):
  """This run's own folder: a new one inside `given` (never removed
  itself), or a fresh temporary one; removed at the end either way."""
  if given:
    os.makedirs(given, exist_ok=True)
  path = tempfile.mkdtemp(prefix='hostile_inputs_', dir=given or None)
  try:
    yield path
  finally:
    shutil.rmtree(path, ignore_errors=True)


def define_flags() -> None:
  flags.DEFINE_string('work_dir', None, 'Where to work (a new folder inside '
                      'it, removed at the end); default: a temporary '
                      'folder.')
  flags.DEFINE_bool('write_results', False, 'Also write the table to '
                    'benchmarks/results/hostile_inputs/table.md.')
  flags.DEFINE_list('items', [], "Only these items' cases (default: all).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  start = time.monotonic()
  items = {int(item) for item in FLAGS.items}
  with work_folder(FLAGS.work_dir) as work:
    ctx = Context(work)
    make_data(ctx)
    rows = run_cases(ctx, items)
    ctx.signatures.clear()
  table = markdown_table(rows)
  command = ' '.join(['python', 'benchmarks/hostile_inputs.py',
                      *map(shlex.quote, sys.argv[1:])])
  top = header(command, time.monotonic() - start)
  print(top)
  print(table)
  if FLAGS.write_results:
    from masklab_tf import files  # pylint: disable=g-import-not-at-top
    os.makedirs(RESULTS, exist_ok=True)
    with files.atomic_write(os.path.join(RESULTS, 'table.md')) as f:
      f.write(f'Hostile and unusual inputs (issue 20), {top}\n\n'
              f'{table}\n')


if __name__ == '__main__':
  define_flags()
  app.run(main)
