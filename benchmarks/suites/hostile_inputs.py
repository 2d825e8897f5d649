"""Hostile and unusual inputs, tried through the real tools: one table.

Why one file of this length: each class of issue 20 is a short case that
makes its input, runs what a user would run on it and reads what happened
into a row; the table is only worth reading with all of them.

Tools run as subprocesses; the exported SavedModel is loaded as TF Serving
would. A row is read from what happened, never written in: item (of the
issue), input, outcome, the first line naming the problem, anything lost.
Item 9 needs a read-only folder and a full disk: as root (whom chmod does
not stop) a read-only bind mount and a small tmpfs; else chmod 555 and a
file size limit (RLIMIT_FSIZE: the same failed write as ENOSPC).
"""

import contextlib
import functools
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

from absl import flags
import numpy as np
from PIL import Image

from benchmarks.harness import results
from benchmarks.harness import runner
from benchmarks.harness import scratch
from benchmarks.harness import suite
from benchmarks.harness import timing

FLAGS = flags.FLAGS
REPO = results.REPO
QUICK = {'items': ['5', '12']}  # bin/check_dataset's cases: seconds
FLAGFILE = os.path.join(REPO, 'configs', 'shapes_cpu.flags')
# The smallest shapes_cpu model with every part, over FLAGFILE.
TINY = ('--backbone_depth=10', '--rpn_head_channels=32',
        '--num_proposals=30', '--test_num_proposals=30',
        '--rpn_pre_nms_top_k=300', '--num_sampled_rois=8',
        '--hypercolumn_channels=8', '--refine_filters=16',
        '--max_detections=5', '--batch_size=2', '--log_every=1',
        '--image_summary_every=0')
SMALL = ('--min_sizes=96', '--eval_min_size=96', '--max_size=96',
         '--checkpoint_every=2', '--warmup_steps=2')
TRAIN_STEPS = 8
MESSAGE_CHARS = 100
NUM_GOOD = 5  # good images in bin/predict's folder
# Lines of TensorFlow's start-up chatter, never the message of a case.
NOISE = ('cuda', 'TF-TRT', 'oneDNN', 'cpu_feature_guard',
         'This TensorFlow binary', 'To enable the following',
         'rebuild TensorFlow', 'Unable to register', 'computation_placer',
         'WARNING: All log messages before absl', 'absl::InitializeLog',
         'Traceback (most recent call last)', 'File "', 'tf.function',
         'retracing', '^^^', 'PredictCost', 'local_rendezvous',
         'Local rendezvous', '[[{{')
LOG_PREFIX = re.compile(r'^[IWEF]\d{4} [\d:.]+\s+\d+ [^\]]*\] ')
STEP_LINE = re.compile(r'^step (\d+)/(\d+)\s', re.M)
RESUMED = re.compile(r'resumed from (\S+) at step (\d+)')
EXTREME = (('wide_2x1000.png', 2, 1000), ('thin_1x4000.png', 1, 4000),
           ('tall_4000x1.png', 4000, 1))
SHORTEN = [REPO + os.sep]  # folders left out of messages
def define_flags():
  flags.DEFINE_list('items', [], "Only these items' cases (default: all).")
  flags.DEFINE_integer('annotations', 10_000, 'Item 6: annotations on the '
                       'image of the crowded case.')
  flags.DEFINE_integer('control_annotations', 5, 'Item 6: annotations on '
                       'the same image in the control case.')
  flags.DEFINE_string('repo', REPO, 'Item 6: the checkout whose bin/train '
                      'runs (e.g. the code before a change).')


class Run:
  """A finished process: exit code (None: killed at the timeout), its
  output, its own peak RSS."""

  def __init__(self, code, stdout, stderr, peak_mib):
    self.code, self.stdout, self.stderr = code, stdout, stderr
    self.peak_mib, self.outcome = peak_mib, exit_text(code)

  def line(self, *needles: str) -> str:
    return first_line(self.stderr + '\n' + self.stdout, *needles)

  def message(self, *needles: str) -> str:
    """The first line (stderr first) naming one of `needles`; else, after a
    failure, stderr's last line (a traceback's error), else '(none)'."""
    return problem_line(self.stderr + '\n' + self.stdout, *needles,
                        fallback=(self.stderr or self.stdout) if self.code
                        else '(none)')


def exit_text(code: int | None) -> str:
  return ('killed at the timeout' if code is None else
          f'killed by {signal.Signals(-code).name}' if code < 0 else
          f'exit {code}')


def run_command(command: list[str], timeout: float = 600, cwd: str = REPO,
                fsize_limit: int = 0) -> Run:
  """`command` to the end through harness.runner.run_process (its own peak
  RSS; killed with its process group after `timeout` s)."""
  with tempfile.TemporaryDirectory(prefix='hostile_run_') as folder:
    out, err = os.path.join(folder, 'o'), os.path.join(folder, 'e')
    code, _, peak = runner.run_process(command, out, timeout, cwd=cwd,
                                       stderr_path=err,
                                       file_size_limit=fsize_limit)
    return Run(code, read(out), read(err), peak)


def tool(name: str, *args: str, **kwargs) -> Run:
  return run_command([sys.executable, os.path.join(REPO, 'bin', name),
                      *args], **kwargs)


def read(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except OSError:
    return ''


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
  """One line without this run's folders, at most `limit` characters."""
  for prefix in SHORTEN:
    text = text.replace(prefix, '')
  # A line starting with its image's path: the input column says where.
  text = re.sub(r'^(skipping |skipped or repaired: )?\S*/([^/\s:]+): ',
                r'\1\2: ', text.strip())
  text = ' '.join(text.split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def meaningful_lines(text: str) -> list[str]:
  lines = (LOG_PREFIX.sub('', line).strip() for line in text.splitlines())
  return [line for line in lines
          if line and not any(noise in line for noise in NOISE)]


def first_line(text: str, *needles: str) -> str:
  """The first meaningful line containing the first of `needles` (in order
  of preference) that any line contains, or ''."""
  lines = meaningful_lines(text)
  return next((line for needle in needles for line in lines
               if needle in line), '')


def problem_line(text: str, *needles: str, fallback: str = '') -> str:
  """The first line of `text` naming one of `needles`, else the last
  meaningful line of `fallback`, clipped; '-' when there is none."""
  line = first_line(text, *needles)
  if line or fallback == '(none)':
    return clip(line) if line else fallback
  rest = meaningful_lines(fallback)
  return clip(rest[-1]) if rest else '-'


def counts(run: Run) -> str:
  return problem_line(run.stdout, 'images=')


def row(item: int, what: str, outcome: str, message: str, lost: str) -> dict:
  return {'item': item, 'input': what, 'outcome': outcome,
          'message': message, 'lost': lost}


def encoded_image(height, width, seed=0, fmt='PNG') -> bytes:
  """Seeded random pixels, encoded: each file its own bytes."""
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(
      0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, fmt)
  return buffer.getvalue()


def write(path: str, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return path


def png_bomb(height: int, width: int) -> bytes:
  """A valid grayscale PNG of height x width black pixels: a few hundred
  KiB that decode to height * width * 3 bytes of RGB."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data)))
  compress = zlib.compressobj(9)
  row = bytes(width + 1)  # filter byte 0, then the row's pixels
  idat = b''.join(compress.compress(row) for _ in range(height))
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack(
      '>IIBBBBB', width, height, 8, 0, 0, 0, 0)) +
          chunk(b'IDAT', idat + compress.flush()) + chunk(b'IEND', b''))


@functools.lru_cache(maxsize=1)
def bomb() -> bytes:
  """The issue's decompression bomb: 20000 x 20000 black pixels, 1.2 GB
  of RGB."""
  return png_bomb(20000, 20000)


def bomb_text() -> str:
  return f'20000x20000 PNG of {len(bomb()) // 1024} KB'


def box(annotation_id, image_id, category_id, top, left, bottom, right):
  return {'id': annotation_id, 'image_id': image_id,
          'category_id': category_id, 'iscrowd': 0,
          'area': (bottom - top) * (right - left),
          'bbox': [left, top, right - left, bottom - top],
          'segmentation': [[left, top, right, top, right, bottom, left,
                            bottom]]}


def write_coco(folder, images, annotations=None, categories=None) -> str:
  """`folder`/annotations.json; images: (id, file_name, height, width);
  without `annotations`, one box (the image's left half) per image."""
  if annotations is None:
    annotations = [box(i, i, 1, 0, 0, h, max(w / 2, 1))
                   for i, _, h, w in images]
  return write(os.path.join(folder, 'annotations.json'), json.dumps({
      'images': [{'id': i, 'file_name': name, 'height': h, 'width': w}
                 for i, name, h, w in images],
      'annotations': annotations,
      'categories': categories or [{'id': 1, 'name': 'thing'}]}).encode())


class Context:
  """What the cases share: this run's folder, the data, the model."""

  def __init__(self, work: str):
    self.work = work
    self.shapes = os.path.join(work, 'shapes')
    self.train_images = os.path.join(self.shapes, 'train', 'images')
    self.train_json = os.path.join(self.shapes, 'train', 'with_extremes.json')
    self.val = (os.path.join(self.shapes, 'val', 'annotations.json'),
                os.path.join(self.shapes, 'val', 'images'))
    self.model_dir = self.export_dir = self.loaded = None
    self.why_no_model = 'not trained yet'
    SHORTEN.insert(0, os.path.join(work, ''))

  def folder(self, name: str) -> str:
    os.makedirs(os.path.join(self.work, name), exist_ok=True)
    return os.path.join(self.work, name)

  def make_data(self) -> None:
    """The shapes set (5 train, 5 val images) and a training json of its
    train images plus the EXTREME aspect ratios, with a box each."""
    from masklab_tf.data import synthetic  # pylint: disable=g-import-not-at-top
    synthetic.make_shapes(self.shapes, num_train=5, num_val=NUM_GOOD, seed=0)
    data = json.loads(read(os.path.join(self.shapes, 'train',
                                        'annotations.json')))
    image_id = max(i['id'] for i in data['images'])
    annotation_id = max(a['id'] for a in data['annotations'])
    for seed, (name, height, width) in enumerate(EXTREME):
      write(os.path.join(self.train_images, name),
            encoded_image(height, width, seed))
      data['images'].append({'id': image_id + seed + 1, 'file_name': name,
                             'height': height, 'width': width})
      data['annotations'].append(box(
          annotation_id + seed + 1, image_id + seed + 1,
          data['categories'][0]['id'], 0, 0, height, max(width / 2, 1)))
    write(self.train_json, json.dumps(data).encode())

  def train_args(self, model_dir, annotations='', steps=TRAIN_STEPS):
    return [f'--flagfile={FLAGFILE}', *TINY, *SMALL,
            f'--train_steps={steps}', f'--model_dir={model_dir}',
            f'--train_annotations={annotations or self.train_json}',
            f'--train_images={self.train_images}']

  def check(self, folder, annotations, *extra) -> Run:
    return tool('check_dataset', f'--annotations={annotations}',
                f'--images={os.path.join(folder, "images")}', *extra)


def extreme_set(folder: str) -> str:
  images = [(i, name, h, w) for i, (name, h, w) in enumerate(EXTREME, 1)]
  for i, name, h, w in images:
    write(os.path.join(folder, 'images', name), encoded_image(h, w, i))
  return write_coco(folder, images)


def one_image_set(folder, size, annotations=None, categories=None) -> str:
  write(os.path.join(folder, 'images', 'a.png'),
        encoded_image(size[0], size[1], 1))
  return write_coco(folder, [(1, 'a.png', *size)], annotations, categories)


# bin/check_dataset on a set: (item, input, makes the set in a folder, extra
# flags, needles of the message, what is lost: a format of {counts}, {kept}).
CHECKS = (
    (1, 'check_dataset: images of 2x1000, 1x4000, 4000x1 px, a box each',
     extreme_set, (), (*(name for name, _, _ in EXTREME), 'error'),
     'kept {kept} of 3 ({counts})'),
    (12, "check_dataset --strict: labelme's COCO export (category 0 "
     '_background_)', lambda folder: one_image_set(
         folder, (40, 60), categories=[{'id': 0, 'name': '_background_'},
                                       {'id': 1, 'name': 'shape'}]),
     ('--strict',), ('background', 'error'), 'no: {counts}'),
    (12, 'check_dataset: every image file missing (3 of 3)',
     lambda folder: write_coco(folder, [(i, f'gone_{i}.png', 40, 60)
                                        for i in (1, 2, 3)]),
     (), ('error', 'no usable'), 'nothing to lose: {counts}'),
    (12, 'check_dataset: one image with 120 instances (a note)',
     lambda folder: one_image_set(folder, (200, 200), [box(
         i + 1, 1, 1, i // 12 * 20, i % 12 * 16, i // 12 * 20 + 10,
         i % 12 * 16 + 10) for i in range(120)]),
     (), ('many_instances',), 'no: {counts}'),
)


def case_checks(ctx: Context, items: set[int]) -> list[dict]:
  """Items 1, 12: CHECKS; item 2: a 20000x20000 PNG in a set, named with
  the pixel limit that applied."""
  rows = []
  for index, (item, what, make, extra, needles, lost) in enumerate(CHECKS):
    if not items or item in items:
      folder = ctx.folder(('extreme', 'labelme', 'missing', 'crowded')[index])
      run = ctx.check(folder, make(folder), *extra)
      kept = re.search(r'images=(\d+)', counts(run))
      rows.append(row(item, what, run.outcome, run.message(*needles),
                      lost.format(counts=counts(run),
                                  kept=kept.group(1) if kept else '?')))
  if items and 2 not in items:
    return rows
  folder = ctx.folder('bomb_check')
  write(os.path.join(folder, 'images', 'bomb.png'), bomb())
  write(os.path.join(folder, 'images', 'good.png'), encoded_image(40, 60, 1))
  run = ctx.check(folder, write_coco(folder, [
      (1, 'good.png', 40, 60), (2, 'bomb.png', 20000, 20000)]))
  skipped = ', skipped' if 'skipped' in run.line('bomb.png') else ''
  return rows + [
      row(2, f'check_dataset: a {bomb_text()} in a set',
          run.outcome + skipped, run.message('bomb.png'),
          f'no: the good image kept ({counts(run)})'),
      row(2, 'check_dataset: which pixel limit applied (same run)',
          'printed' if 'pixel limit' in run.stdout else 'not printed',
          problem_line(run.stdout, 'pixel limit'), '-')]


def case_paths_outside_images(ctx: Context) -> list[dict]:
  """Item 5: file_names that leave --images (`../x.png`, an absolute path,
  a symlink inside pointing out) through check_dataset, with and without
  --allow_outside_images, and make_tfrecords."""
  folder = ctx.folder('outside')
  write(os.path.join(folder, 'images', 'good.png'), encoded_image(40, 60, 1))
  secrets = {name: write(os.path.join(folder, 'elsewhere', name),
                         encoded_image(40, 60, seed))
             for seed, name in enumerate(('relative.png', 'absolute.png',
                                          'linked.png'), start=2)}
  os.symlink(secrets['linked.png'], os.path.join(folder, 'images', 'link.png'))
  entries = (('`../x.png` (file_name ../elsewhere/relative.png)',
              '../elsewhere/relative.png', 'relative.png'),
             ('absolute path (file_name /.../elsewhere/absolute.png)',
              secrets['absolute.png'], 'absolute.png'),
             ('symlink inside --images to a file outside (link.png)',
              'link.png', 'link.png'))
  annotations = write_coco(folder, [(1, 'good.png', 40, 60)] + [
      (i, name, 40, 60) for i, (_, name, _) in enumerate(entries, 2)])
  run = ctx.check(folder, annotations)
  rows = [row(5, f'check_dataset: {what}', run.outcome + (
      ', skipped' if 'skipped' in run.line(needle) else ', read'),
              clip(run.line(needle)) or '(none)',
              f'no: good.png kept ({counts(run)})')
          for what, _, needle in entries]
  allowed = ctx.check(folder, annotations, '--allow_outside_images')
  prefix = os.path.join(folder, 'records', 'train')
  records = tool('make_tfrecords', f'--annotations={annotations}',
                 f'--images={os.path.join(folder, "images")}',
                 f'--output_prefix={prefix}', '--num_shards=1')
  shards = b''.join(read_bytes(os.path.join(folder, 'records', name))
                    for name in sorted(os.listdir(os.path.dirname(prefix)))
                    if name.endswith('.tfrecord'))
  copied = [name for name, path in secrets.items()
            if read_bytes(path) in shards]
  wrote = re.search(r'wrote (\d+) images', records.stdout)
  return rows + [
      row(5, 'check_dataset --allow_outside_images on the same set',
          f'{allowed.outcome} ({counts(allowed)})',
          allowed.message('outside_images'), '-'),
      row(5, 'make_tfrecords on the same set',
          f'{records.outcome}: wrote {wrote.group(1) if wrote else "?"} '
          'images', records.message('relative.png', 'error'),
          'outside files copied into the TFRecords: ' +
          (', '.join(copied) or 'none'))]


def read_bytes(path: str) -> bytes:
  with open(path, 'rb') as f:
    return f.read()


def written(model_dir: str) -> str:
  """What a refused run left in its model_dir."""
  if not os.path.exists(model_dir):
    return 'nothing written (no model_dir)'
  names = sorted(n for n in os.listdir(model_dir) if n != '.lock')
  return ('wrote ' + clip(', '.join(names), 60) if names else
          'nothing written') + ' in model_dir'


@contextlib.contextmanager
def read_only_folder(path: str):
  """Yields (`path` made read-only, how), or (None, why not)."""
  os.makedirs(path)
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    try:
      yield path, 'chmod 555'
    finally:
      os.chmod(path, 0o755)
    return
  def mount(*args):
    return subprocess.run(['mount', *args, path, path],
                          capture_output=True).returncode == 0
  mounted = mount('--bind')
  try:
    if mounted and mount('-o', 'remount,bind,ro'):
      yield path, 'a read-only bind mount (root ignores chmod)'
    else:
      yield None, 'not tried: root ignores chmod, and mounting is not allowed'
  finally:
    if mounted:
      subprocess.run(['umount', path], check=False)


def case_train_refuses(ctx: Context, items: set[int]) -> list[dict]:
  """Item 7: more categories than --num_classes, a set whose every
  annotation is skipped; item 9: a model_dir below a file and a read-only
  one, refused before any data is read (the training json is missing)."""
  annotations = os.path.join(ctx.shapes, 'train', 'annotations.json')
  data = json.loads(read(annotations))
  for annotation in data['annotations']:
    annotation['category_id'] = 99  # in no category: every one skipped
  skipped = write(os.path.join(ctx.folder('all_skipped'),
                               'annotations.json'), json.dumps(data).encode())
  rows = []
  for item, what, path, extra, needles in (
      (7, '--num_classes=2 on a set of 4 categories', annotations,
       ['--num_classes=2'], ('num_classes', 'label value', 'rror')),
      (7, 'on a set whose every annotation is skipped (category 99)',
       skipped, [], ('no instance', 'rror'))):
    if not items or item in items:
      model_dir = os.path.join(ctx.work, f'train_{len(rows)}')
      run = tool('train', *ctx.train_args(model_dir, path, 1), *extra)
      rows.append(row(7, f'bin/train {what}', run.outcome,
                      run.message(*needles), written(model_dir)))
  if items and 9 not in items:
    return rows
  missing = os.path.join(ctx.folder('unwritable'), 'missing.json')
  blocker = write(os.path.join(ctx.work, 'unwritable', 'a_file'), b'file')
  run = tool('train', *ctx.train_args(os.path.join(blocker, 'model'),
                                      missing))
  rows.append(row(9, '--model_dir below a file (training json missing too)',
                  run.outcome, run.message('model_dir', 'rror'), '-'))
  with read_only_folder(os.path.join(ctx.work, 'unwritable', 'read_only')) as (
      path, how):
    run = path and tool('train', *ctx.train_args(path, missing))
    return rows + [row(9, f'read-only --model_dir ({how})', run.outcome,
                       run.message('model_dir', 'rror'), '-') if run else
                   row(9, 'read-only --model_dir', how, '-', '-')]


def case_two_tfrecord_writers(ctx: Context) -> list[dict]:
  """Item 13: two bin/make_tfrecords on one --output_prefix at once."""
  annotations = os.path.join(ctx.shapes, 'train', 'annotations.json')
  folder = ctx.folder('two_writers')
  runs = []
  threads = [threading.Thread(target=lambda: runs.append(tool(
      'make_tfrecords', f'--annotations={annotations}',
      f'--images={ctx.train_images}', '--num_shards=2',
      f'--output_prefix={os.path.join(folder, "train")}', timeout=300)))
             for _ in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  names = sorted(os.listdir(folder))
  shards = [os.path.join(folder, n) for n in names
            if re.match(r'train-.*-of-', n)]  # the writers' glob
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    count = sum(1 for _ in tf.data.TFRecordDataset(shards))
  except tf.errors.OpError as error:
    count = f'unreadable ({tf_error_text(error)})'
  images = len(json.loads(read(annotations))['images'])
  leftovers = [n for n in names if 'tmp' in n]
  return [row(13, 'two bin/make_tfrecords on one --output_prefix at once',
              ', '.join(run.outcome for run in runs),
              '; '.join(run.message('rror') if run.code else '(none)'
                        for run in runs),
              ('no' if count == images and not leftovers else 'yes') +
              f': {len(shards)} shards hold {count} records of {images} '
              f'images; temporary files left: {len(leftovers)}')]


def case_benchmark_work_dir(ctx: Context) -> list[dict]:
  """Item 13: `python -m benchmarks chaos --work_dir=DIR` where DIR holds
  the user's files: are they still there?"""
  user = ctx.folder('users_folder')
  mine = {write(os.path.join(user, name), text.encode()): text for name, text
          in (('notes.txt', 'mine'), ('data/annotations.json', '{}'),
              ('model/checkpoint', 'my run'))}
  run = run_command([sys.executable, '-m', 'benchmarks', 'chaos',
                     f'--work_dir={user}', '--kills=0', '--train_steps=2'])
  intact = sum(read(path) == text for path, text in mine.items())
  return [row(13, 'python -m benchmarks chaos --work_dir=DIR, DIR holding '
              "the user's data/, model/, notes.txt", run.outcome,
              run.message(*(('kept', 'rror') if run.code == 0 else
                            ('rror',))),
              ('no' if intact == len(mine) else 'yes') +
              f": {intact} of {len(mine)} of the user's files intact")]


def last_step(text: str) -> int:
  return int((STEP_LINE.findall(text) or [('0', '')])[-1][0])


def checkpoint_named(model_dir: str) -> str:
  """The checkpoint the `checkpoint` state file names ('' if none)."""
  match = re.search(r'^model_checkpoint_path: "([^"]+)"',
                    read(os.path.join(model_dir, 'checkpoint')), re.M)
  return os.path.basename(match.group(1)) if match else ''


def train_model(ctx: Context) -> list[dict]:
  """Items 1, 8: trains the tiny model on the shapes set with the EXTREME
  images; while it trains, a second bin/train on its model_dir; SIGKILLs
  it once a checkpoint after step 2 is complete and starts it again (on
  the lock the killed one left). Sets ctx.model_dir."""
  model_dir = os.path.join(ctx.work, 'model')
  log_path = os.path.join(ctx.work, 'train_first.log')
  with open(log_path, 'w') as log:  # killed on purpose: no peak to read
    first = subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'bin', 'train'),
         *ctx.train_args(model_dir)], cwd=REPO, stdout=log,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
  def wait_for(condition, timeout):
    end = time.monotonic() + timeout
    while not condition() and first.poll() is None and (
        time.monotonic() < end):
      time.sleep(0.2)
  try:
    wait_for(lambda: read(os.path.join(model_dir, '.lock')).startswith(
        'PID') or 'initialised' in read(log_path), 300)
    second = tool('train', *ctx.train_args(model_dir, steps=1))
    rows = [row(8, 'a second bin/train on the --model_dir of a running one',
                second.outcome, second.message('in use', 'rror'),
                ('no: the first trains on' if first.poll() is None else
                 f'first ended meanwhile ({exit_text(first.poll())})')
                + ('; the second wrote checkpoints' if second.code == 0
                   else ''))]
    wait_for(lambda: last_step(read(log_path)) >= 2 and os.path.exists(
        os.path.join(model_dir, 'checkpoint')), 600)
    killed_at = last_step(read(log_path))
  finally:
    if first.poll() is None:
      first.send_signal(signal.SIGKILL)
    first.wait()
  if first.returncode != -signal.SIGKILL:
    text = read(log_path)
    return rows + train_plain(ctx) + [row(
        1, 'bin/train on shapes + 2x1000, 1x4000, 4000x1 images',
        exit_text(first.returncode),
        problem_line(text, 'rror', fallback=text),
        f'trained {last_step(text)} of {TRAIN_STEPS} steps')]
  last = checkpoint_named(model_dir)
  again = tool('train', *ctx.train_args(model_dir))
  resumed = RESUMED.search(again.stdout + again.stderr)
  start, reached = int(resumed.group(2)) if resumed else 0, last_step(
      again.stdout)
  set_size = len(json.loads(read(ctx.train_json))['images'])
  seen = 2 * (reached - start)  # TINY's --batch_size=2
  if again.code == 0:
    ctx.model_dir = model_dir
  return rows + ([] if again.code == 0 else train_plain(ctx)) + [
      row(8, f'bin/train again after the first was SIGKILLed (step '
          f'{killed_at}) holding the lock', again.outcome,
          again.message('taking over', 'lock', 'rror'),
          (f'no: resumed at step {start} from {last or "nothing"} (its last '
           'checkpoint), ' if resumed else 'not resumed: ') +
          f'reached {reached}/{TRAIN_STEPS}'),
      row(1, f'bin/train on {set_size - len(EXTREME)} shapes + 2x1000, '
          '1x4000, 4000x1 images (the resumed run)', again.outcome,
          again.message('output dimensions', 'rror'),
          ('no' if again.code == 0 else 'yes: it failed') +
          f': steps {start + 1}-{reached} drew {seen} images of the '
          f'{set_size}-image set (shuffled, then repeated: ' +
          ('every image seen)' if seen >= set_size else 'not all seen)'))]


def train_plain(ctx: Context) -> list[dict]:
  """The fallback model: the shapes set alone (no row of its own)."""
  model_dir = os.path.join(ctx.work, 'model_plain')
  run = tool('train', *ctx.train_args(
      model_dir, os.path.join(ctx.shapes, 'train', 'annotations.json')))
  if run.code == 0:
    ctx.model_dir = model_dir
  else:
    ctx.why_no_model = f'training failed: {run.message("rror")}'
  return []


def case_export_evaluate(ctx: Context) -> list[dict]:
  """Item 11: bin/export and bin/evaluate as the README shows them (the
  flagfile, not the run's TINY overrides). Sets ctx.export_dir (exported
  with the run's flags given again, in a folder of its own, when the
  README's way fails)."""
  what = ('bin/{} --flagfile=configs/shapes_cpu.flags --model_dir=RUN (run '
          'trained with other flags)')
  if not ctx.model_dir:
    return [row(11, what.format(name), 'not run', ctx.why_no_model, '-')
            for name in ('export', 'evaluate')]
  export_dir = os.path.join(ctx.work, 'export', '1')
  run = tool('export', f'--flagfile={FLAGFILE}',
             f'--model_dir={ctx.model_dir}', f'--export_dir={export_dir}')
  lost = ''
  if run.code != 0:
    export_dir = os.path.join(ctx.work, 'export_with_run_flags', '1')
    retry = tool('export', f'--flagfile={FLAGFILE}', *TINY, *SMALL,
                 f'--model_dir={ctx.model_dir}', f'--export_dir={export_dir}',
                 f'--categories={ctx.train_json}')
    lost = ('yes: exported only with the training flags and --categories '
            'given again' if retry.code == 0 else
            f'yes: no export ({retry.message("rror")})')
  if os.path.exists(os.path.join(export_dir, 'saved_model.pb')):
    ctx.export_dir = export_dir
    names = [c['name'] for c in json.loads(read(os.path.join(
        export_dir, 'assets', 'categories.json')) or '[]')]
    lost = lost or (f'no: class names kept ({", ".join(names)})' if names
                    else 'yes: no class names in the SavedModel')
  else:
    ctx.why_no_model = 'export failed'
  annotations, images = ctx.val
  output = os.path.join(ctx.work, 'evaluate')
  evaluate = tool('evaluate', f'--flagfile={FLAGFILE}',
                  f'--model_dir={ctx.model_dir}', f'--images={images}',
                  f'--annotations={annotations}', f'--output_dir={output}')
  metrics = os.path.exists(os.path.join(output, 'metrics.json'))
  return [row(11, what.format(name), done.outcome,
              done.message('trained with', 'override', 'rror'), lost)
          for name, done, lost in (
              ('export', run, lost), ('evaluate', evaluate,
                                      'no: metrics.json written' if metrics
                                      else 'yes: no metrics.json'))]


def tf_error_text(error: Exception) -> str:
  """A TensorFlow error as its client sees it, without graph boilerplate:
  an assertion's own message where there is one."""
  message = getattr(error, 'message', None) or str(error)
  match = re.search(r'assertion failed: \[(.*)\]', message)
  if match:
    return clip(match.group(1))
  message = re.sub(r'\[\[.*?\]\]|\{\{.*?\}\}|\[Op:[^\]]*\]', '', message)
  return problem_line(message, fallback='') if message.strip() else '-'


def call(ctx: Context, name: str, value) -> tuple[dict | None, str]:
  """(outputs as numpy, '') or (None, the error as the client sees it)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ctx.loaded = ctx.loaded or tf.saved_model.load(ctx.export_dir)
  key = 'encoded' if name == 'serving_encoded' else 'images'
  try:
    outputs = ctx.loaded.signatures[name](**{key: tf.constant(value)})
    return {k: v.numpy() for k, v in outputs.items()}, ''
  except (tf.errors.OpError, ValueError, TypeError) as error:
    return None, tf_error_text(error)


def served(outputs: dict | None) -> str:
  return ('request refused' if outputs is None else
          f'served: semantic_map {tuple(outputs["semantic_map"].shape)}, '
          f'{int(outputs["num_detections"].sum())} detections')


def pixels(height: int, width: int) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(encoded_image(height, width,
                                                        4))))[None]


def good_batch() -> list[bytes]:
  """16 small images, PNG, JPEG, PNG, BMP in turn."""
  return [encoded_image(40 + i, 50, i, ('PNG', 'JPEG', 'PNG', 'BMP')[i % 4])
          for i in range(16)]


# Requests to the exported model: (item, signature, input, the value).
REQUESTS = (
    (1, 'serving_encoded', '[2x1000, 1x4000, 160x160] PNGs', lambda: [
        encoded_image(2, 1000, 1), encoded_image(1, 4000, 2),
        encoded_image(160, 160, 3)]),
    (1, 'serving_default', 'uint8 [1, 1, 4000, 3]', lambda: pixels(1, 4000)),
    (1, 'serving_default', 'uint8 [1, 4000, 1, 3]', lambda: pixels(4000, 1)),
    (2, 'serving_encoded', '[30x40, BOMB, 40x30]', None),  # bomb_request
    (2, 'serving_default', 'uint8 [1, 6400, 6400, 3] (41 MP)',
     lambda: np.zeros([1, 6400, 6400, 3], np.uint8)),
    (4, 'serving_encoded', "batch of 16 PNG / JPEG / BMP, element 11: "
     "b'not an image'", lambda: good_batch()[:11] + [b'not an image'] +
     good_batch()[12:]),
    (4, 'serving_encoded', 'batch of 16 PNG / JPEG / BMP, element 2: a PNG '
     'cut in half', lambda: good_batch()[:2] + [good_batch()[2][:len(
         good_batch()[2]) // 2]] + good_batch()[3:]),
    (4, 'serving_encoded', 'one string, not a [batch] vector',
     lambda: good_batch()[0]),
    (4, 'serving_encoded', 'strings [1, 1]', lambda: [good_batch()[:1]]),
    (4, 'serving_default', 'uint8 [40, 50, 3] (no batch dimension)',
     lambda: np.zeros([40, 50, 3], np.uint8)),
    (4, 'serving_default', 'uint8 [1, 40, 50, 4] (RGBA)',
     lambda: np.zeros([1, 40, 50, 4], np.uint8)),
)


def case_requests(ctx: Context, items: set[int]) -> list[dict]:
  """Items 1, 2, 4: the REQUESTS; a batch with one bad element must not
  stop the good ones (the 14 served in the next request)."""
  rows = []
  for item, name, what, value in REQUESTS:
    if items and item not in items:
      continue
    what = what.replace('BOMB', bomb_text())
    if not ctx.export_dir:
      rows.append(row(item, f'{name}: {what}', 'not run', ctx.why_no_model,
                      '-'))
      continue
    if value is None:
      rows.append(bomb_request(ctx, f'{name}: {what}'))
      continue
    outputs, error = call(ctx, name, value())
    lost = '-'
    if 'element' in what:
      rest, _ = call(ctx, name, good_batch()[:2] + good_batch()[3:11] +
                     good_batch()[12:])
      lost = ('no: the 14 good ones served in the next request' if rest
              is not None else 'yes: the good ones were refused too')
    rows.append(row(item, f'{name}: {what}', served(outputs),
                    error or '(none)', lost))
  return rows


def bomb_request(ctx: Context, what: str) -> dict:
  """Item 2: a 20000x20000 PNG in a batch of serving_encoded: refused
  without the memory, and the next request served."""
  small = [encoded_image(30, 40, 1), encoded_image(40, 30, 2)]
  call(ctx, 'serving_encoded', small)  # loaded before the measurement
  measured = timing.reset_peak_rss()
  before = timing.rss_mib('VmRSS')
  outputs, error = call(ctx, 'serving_encoded', [small[0], bomb(), small[1]])
  grew = timing.rss_mib() - before
  after, after_error = call(ctx, 'serving_encoded', small)
  return row(2, what,
             served(outputs) + (f'; peak RSS +{grew:.0f} MB' if measured
                                else ''), error or '(none)',
             'no: the two small ones served next' if after is not None else
             f'yes: the next request failed too ({after_error})')


def match_detections(alone: dict, batch: dict) -> tuple[float, float]:
  """(max box shift in px, max score change) from each detection of the
  first image alone to its nearest unused one of the same class in the
  batch (near-equal scores may swap places); inf where one has none."""
  count = int(batch['num_detections'][0])
  unused, shift, change = set(range(count)), 0.0, 0.0
  for i in range(int(alone['num_detections'][0])):
    distance = {j: float(np.abs(batch['detection_boxes'][0, j] -
                                alone['detection_boxes'][0, i]).max())
                for j in unused if batch['detection_classes'][0, j] ==
                alone['detection_classes'][0, i]}
    if not distance:
      return float('inf'), float('inf')
    j = min(distance, key=distance.get)
    unused.remove(j)
    shift = max(shift, distance[j])
    change = max(change, abs(float(batch['detection_scores'][0, j] -
                                   alone['detection_scores'][0, i])))
  return shift, change


def case_batch_companions(ctx: Context) -> list[dict]:
  """Item 10: a 120x160 image served alone, then in a batch with a larger
  (160x160) one, through serving_encoded of the trained model."""
  what = ('serving_encoded: a 120x160 shapes image alone, then in a batch '
          'with a 160x160 one (trained model)')
  if not ctx.export_dir:
    return [row(10, what, 'not run', ctx.why_no_model, '-')]
  names = sorted(os.listdir(ctx.val[1]))
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(Image.open(os.path.join(
      ctx.val[1], names[0])).convert('RGB'))[:120]).save(buffer, 'PNG')
  image = buffer.getvalue()
  alone, error = call(ctx, 'serving_encoded', [image])
  again, _ = call(ctx, 'serving_encoded', [image])
  batch, batch_error = call(ctx, 'serving_encoded', [
      image, read_bytes(os.path.join(ctx.val[1], names[1]))])
  if alone is None or batch is None:
    return [row(10, what, 'request refused', error or batch_error, '-')]
  found = int(alone['num_detections'][0]), int(batch['num_detections'][0])
  shift, change = match_detections(alone, batch)
  # The control: the same request twice (run-to-run noise, if any).
  noise = max(match_detections(alone, again)) if again is not None else -1
  differ = [name for name, bad in (
      ('the number of detections', found[0] != found[1]),
      ('boxes by > 0.5 px', shift > 0.5), ('scores by > 1e-3', change > 1e-3))
            if bad]
  return [row(10, what, f'{found[0]} vs {found[1]} detections; max box '
              f'shift {shift:.3g} px, max score change {change:.3g} (each '
              'detection to its nearest of its class; alone twice: '
              f'{noise:.3g})', '(none)',
              'yes: the batch changes ' + ', '.join(differ) if differ else
              'no: the same detections (within 0.5 px, 1e-3)')]


# bin/predict's hostile files: (item, name, what it is, its bytes).
PREDICT_FILES = (
    (3, 'corrupt.png', lambda: 'a PNG signature then garbage',
     lambda: b'\x89PNG\r\n\x1a\n' + b'garbage' * 100),
    (2, 'bomb.png', bomb_text, bomb),
    (3, 'big.png', lambda: "7000x6000: under --max_image_pixels=1e8, over "
     "the SavedModel's 40 MP", lambda: encoded_image(7000, 6000)),
    (1, 'wide.png', lambda: '1x4000 image', lambda: encoded_image(1, 4000,
                                                                  3)),
)


def case_predict_folder(ctx: Context) -> list[dict]:
  """Items 1, 2, 3: bin/predict --batch_size=4 on 5 good images and the
  PREDICT_FILES (big.png passes --max_image_pixels but not the model's
  limit: the model fails on it inside a batch)."""
  what = (f'bin/predict --batch_size=4 on a folder: {NUM_GOOD} good images '
          '+ the 4 files below')
  if not ctx.export_dir:
    return [row(3, what, 'not run', ctx.why_no_model, '-')]
  folder = ctx.folder('predict_in')
  good = sorted(os.listdir(ctx.val[1]))[:NUM_GOOD]
  for name in good:
    shutil.copy(os.path.join(ctx.val[1], name), folder)
  for _, name, _, data in PREDICT_FILES:
    write(os.path.join(folder, name), data())
  output = os.path.join(ctx.work, 'predict_out')
  run = tool('predict', f'--saved_model={ctx.export_dir}',
             f'--images={folder}', f'--output_dir={output}',
             '--batch_size=4', '--max_image_pixels=100000000')
  names = sorted(os.listdir(folder))  # bin/predict's ids: 1.. in order
  done = {name for name in names if re.search(
      rf'{re.escape(name)}: \d+ detections', run.stdout)}
  try:
    found = json.loads(read(os.path.join(output, 'results.json')))
    kept = sum(names.index(n) + 1 in {r['image_id'] for r in found}
               for n in good)
    lost = (f'{"no" if kept == len(good) else "yes"}: results.json holds '
            f'{kept} of {len(good)} good images ({len(found)} detections)')
  except ValueError:
    lost = 'yes: no results.json'
  rows = [row(3, what, f'{run.outcome} ({len(done)} predicted, peak RSS '
              f'{run.peak_mib:.0f} MB)',
              problem_line(run.stdout, ' images, ', fallback=run.stderr),
              lost)]
  # The files that shared big.png's batch: those not skipped before the
  # model (unreadable, over the pixel limit), --batch_size at a time.
  queue = [n for n in names if not re.search(
      rf'skipping \S*{re.escape(n)}: (?!the model failed)', run.stderr)]
  at = queue.index('big.png') // 4 * 4 if 'big.png' in queue else len(queue)
  others = [n for n in queue[at:at + 4] if n != 'big.png']
  for item, name, shown, _ in PREDICT_FILES:
    line = problem_line(run.stdout if name in done else run.stderr,
                        f'{name}:')
    rows.append(row(item, f'bin/predict: {name} ({shown()})', (
        'predicted' if name in done else 'skipped, named' if name in line
        else 'not named') + (f" (the run's peak RSS {run.peak_mib:.0f} MB)"
                             if name == 'bomb.png' else ''), line,
                    '-' if name != 'big.png' else
                    ('no' if set(others) <= done else 'yes') +
                    ': its batch companions ' + ', '.join(
                        f'{o} {"predicted" if o in done else "lost"}'
                        for o in others)))
  return rows


def case_full_disk(ctx: Context) -> list[dict]:
  """Item 9: the trained run continued on a filesystem with room for less
  than one more checkpoint (a tmpfs as root; else a file size limit), then
  continued again with room."""
  if not ctx.model_dir:
    return [row(9, 'disk full at a checkpoint save', 'not run',
                ctx.why_no_model, '-')]
  checkpoint_kib = max(os.path.getsize(os.path.join(ctx.model_dir, name))
                       for name in os.listdir(ctx.model_dir)
                       if '.data-' in name) // 1024
  used = sum(os.path.getsize(os.path.join(root, name)) for root, _, names
             in os.walk(ctx.model_dir) for name in names) // 1024
  mount = ctx.folder('full_disk')
  room = used + checkpoint_kib // 2 + 256
  mounted = os.geteuid() == 0 and subprocess.run(
      ['mount', '-t', 'tmpfs', '-o', f'size={room}k', 'tmpfs', mount],
      capture_output=True).returncode == 0
  try:
    model_dir = os.path.join(mount, 'model')
    shutil.copytree(ctx.model_dir, model_dir)
    kept, steps = checkpoint_named(model_dir), TRAIN_STEPS + 2
    args = [*ctx.train_args(model_dir, steps=steps), '--checkpoint_every=1']
    full = tool('train', *args, fsize_limit=0 if mounted else
                checkpoint_kib // 2 * 1024)
    after = checkpoint_named(model_dir)
    partial = [n for n in os.listdir(model_dir) if n.endswith('_temp')]
    if mounted:
      subprocess.run(['mount', '-o', f'remount,size={used * 4 + 8192}k',
                      mount], check=False)
    again = tool('train', *args)
    resumed = RESUMED.search(again.stdout + again.stderr)
    left = [n for n in os.listdir(model_dir) if n.endswith('_temp')]
  finally:
    if mounted:
      subprocess.run(['umount', mount], check=False)
  how = ('tmpfs with room for half a checkpoint' if mounted else
         f'file size limit {checkpoint_kib // 2} KB (RLIMIT_FSIZE)')
  return [row(9, f'disk full at a checkpoint save ({how})', full.outcome,
              full.message('cannot save', 'No space', 'too large', 'rror'),
              (f'no: "checkpoint" still names {after}' if after == kept else
               f'"checkpoint" names {after or "nothing"} (was {kept})') +
              (f'; partial {", ".join(partial)} left' if partial else '')),
          row(9, 'bin/train again with room', again.outcome,
              again.message('removed', 'rror'),
              (f'no: resumed at step {resumed.group(2)}' if resumed else
               'not resumed') + f', reached {last_step(again.stdout)}/'
              f'{steps}; ' + ('partial save removed' if partial and not left
                              else f'partial saves: {left or "none"}'))]


def measure(num_annotations: int = 10_000, control_annotations: int = 5,
            repo: str = REPO) -> list[dict]:
  """Peak RSS of a 3-step training (bin/train of `repo`, a tiny model) on
  one 160x160 image with `num_annotations` random rectangles of 4 classes
  and with `control_annotations`: memory should follow the image and the
  instances kept, not the annotation count (10,000 once took 4.8 GB). Each
  bin/train reports its own peak, whatever process calls this.

  Returns rows {'case', 'annotations', 'peak_rss_mb', 'ratio'} (ratio to
  the control), control first.
  """
  rows = []
  with tempfile.TemporaryDirectory(prefix='annotation_memory_') as work:
    for case, count in (('few annotations (control)', control_annotations),
                        ('many annotations', num_annotations)):
      folder, rng = os.path.join(work, f'set_{count}'), np.random.default_rng(0)
      sides = rng.integers(4, 40, (count, 2))
      corners = rng.integers(0, 160 - sides)
      annotations = one_image_set(folder, (160, 160), [box(
          i + 1, 1, int(rng.integers(1, 5)), *map(int, corner),
          *map(int, corner + side)) for i, (corner, side) in enumerate(
              zip(corners, sides))], [{'id': i, 'name': f'class{i}'}
                                      for i in range(1, 5)])
      run = run_command([
          sys.executable, os.path.join(repo, 'bin', 'train'),
          f'--flagfile={os.path.join(repo, "configs", "shapes_cpu.flags")}',
          *TINY, '--min_sizes=160', '--eval_min_size=160', '--max_size=160',
          '--checkpoint_every=100', '--warmup_steps=1', '--train_steps=3',
          f'--train_annotations={annotations}',
          f'--train_images={os.path.join(folder, "images")}',
          f'--model_dir={os.path.join(folder, "run")}'], cwd=repo)
      if run.code != 0:
        raise RuntimeError(f'bin/train on {count} annotations: {run.outcome}'
                           f'\n{(run.stdout + run.stderr)[-3000:]}')
      rows.append({'case': case, 'annotations': count,
                   'peak_rss_mb': run.peak_mib,
                   'ratio': run.peak_mib / (rows or [{'peak_rss_mb':
                                                      run.peak_mib}])[0][
                                                          'peak_rss_mb']})
  return rows


def case_annotation_memory(ctx: Context) -> list[dict]:
  """Item 6: measure() with the flags' annotation counts."""
  del ctx  # measure() works in a temporary folder of its own
  found = measure(FLAGS.annotations, FLAGS.control_annotations, FLAGS.repo)
  return [row(6, f'bin/train 3 steps, one 160x160 image, '
              f'{r["annotations"]:,} annotations' +
              (' (control)' if r is found[0] else ''),
              f'exit 0; peak RSS {r["peak_rss_mb"]:.0f} MB', '(none)',
              '-' if r is found[0] else
              f'ratio to the control {r["ratio"]:.2f} (goal <= 1.5)')
          for r in found]


# (items, case) in running order; cases given the items choose among their
# rows. train_model and case_export_evaluate are listed under every item
# whose cases need the model (those cases say so where there is none).
CASES = (((1, 2, 12), case_checks), ((5,), case_paths_outside_images),
         ((7, 9), case_train_refuses), ((13,), case_two_tfrecord_writers),
         ((1, 2, 3, 4, 8, 9, 10, 11), train_model),
         ((1, 2, 3, 4, 9, 10, 11), case_export_evaluate),
         ((1, 2, 4), case_requests), ((10,), case_batch_companions),
         ((1, 2, 3), case_predict_folder), ((9,), case_full_disk),
         ((13,), case_benchmark_work_dir), ((6,), case_annotation_memory))
COLUMNS = [results.column('item', 'item', 'd'),
           results.column('input', 'input'),
           results.column('outcome', 'outcome'),
           results.column('message', 'message shown'),
           results.column('lost', 'anything lost')]


def run_cases(ctx: Context, items: set[int]) -> list[dict]:
  """The cases of `items` (all if empty) in order; rows sorted by item. A
  case that raises is a row saying so."""
  rows = []
  for case_items, case in CASES:
    if items and not items & set(case_items):
      continue
    print(f'{case.__name__} (items {case_items})', flush=True)
    try:
      rows += (case(ctx, items) if case in (case_checks, case_train_refuses,
                                            case_requests) else case(ctx))
    except Exception as error:  # pylint: disable=broad-except
      rows.append(row(case_items[0], case.__name__, 'case failed',
                      clip(f'{type(error).__name__}: {error}'), '?'))
  return sorted(rows, key=lambda r: r['item'])  # stable: run order kept


def main(argv):
  del argv
  items = {int(item) for item in suite.chosen('items', QUICK)}
  start = time.monotonic()
  with scratch.work_dir(FLAGS.work_dir, 'masklab_hostile_inputs_') as given:
    work = scratch.fresh_folder(given, 'hostile_inputs_')  # its own
    try:
      ctx = Context(work)
      ctx.make_data()
      rows = run_cases(ctx, items)
      ctx.loaded = None
    finally:
      shutil.rmtree(work, ignore_errors=True)
  suite.publish(results.new(
      'hostile_inputs', 'Hostile and unusual inputs (issue 20)',
      [results.text(f'{(time.monotonic() - start) / 60:.1f} min.'),
       results.table('cases', COLUMNS, rows)], {'items': sorted(items)}))
