"""bin/predict on hostile and unusual files: extreme aspect ratios are
predicted, decompression bombs refused from their headers, and a file the
model fails on is named and skipped without losing anyone's results."""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

import hostile_images as hostile
from masklab_tf.tools import image_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PREDICT = os.path.join(REPO, 'bin', 'predict')


def _predict(exported_model, folder, output_dir, *flags):
  return subprocess.run(
      [sys.executable, PREDICT, f'--saved_model={exported_model["export_dir"]}',
       f'--images={folder}', f'--output_dir={output_dir}',
       '--score_threshold=0.0', *flags],
      cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # The fast suite predicts both in the test below.
def test_predict_on_extreme_aspect_ratios(exported_model, tmp_path):
  """2x1000 and 1x4000 PNGs among ordinary ones, default flags, batches of
  2: all predicted, pictures in their own size, exit code 0."""
  folder = tmp_path / 'images'
  folder.mkdir()
  sizes = {'a_small': (40, 50), 'b_wide': (2, 1000), 'c_long': (1, 4000),
           'd_small': (30, 20)}
  for name, (height, width) in sizes.items():
    (folder / f'{name}.png').write_bytes(hostile.encode(height, width))
  output_dir = tmp_path / 'out'
  result = _predict(exported_model, folder, output_dir, '--batch_size=2')
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  with open(output_dir / 'results.json') as f:
    results = json.load(f)
  assert {r['image_id'] for r in results} == {1, 2, 3, 4}
  for name, (height, width) in sizes.items():
    with Image.open(output_dir / f'{name}_semantic.png') as picture:
      assert picture.size == (width, height)


def test_predict_keeps_every_result_and_names_every_skipped_file(
    exported_model, tmp_path):
  """One run, batches of 3, over ordinary images, 2x1000 and 1x4000 PNGs,
  a 100-megapixel PNG bomb (over --max_image_pixels: refused from its
  header) and a 49-megapixel one (within this run's limit, over the
  SavedModel's 40: the model fails its batch, which reruns image by
  image). Every other image is predicted and in results.json; the two
  bombs are named with their reasons; the exit code is 1."""
  folder = tmp_path / 'images'
  folder.mkdir()
  files = {'a_small.png': hostile.encode(40, 50),
           'b_wide.png': hostile.encode(2, 1000),
           'c_bomb.png': hostile.png_bomb(10000, 10000),
           'd_long.png': hostile.encode(1, 4000),
           'e_large.png': hostile.png_bomb(7000, 7000),
           'f_tall.jpg': hostile.encode(1000, 3, 'JPEG'),
           'g_small.png': hostile.encode(30, 20)}
  for name, data in files.items():
    (folder / name).write_bytes(data)
  output_dir = tmp_path / 'out'
  result = _predict(exported_model, folder, output_dir, '--batch_size=3',
                    '--max_image_pixels=60000000')
  log = result.stdout + result.stderr
  assert result.returncode == 1, log[-3000:]
  assert re.search(r'c_bomb\.png: 10000 x 10000 = 100000000 pixels, over the '
                   r'limit of 60000000 \(--max_image_pixels; not decoded\)',
                   result.stderr), log[-3000:]
  assert re.search(r'e_large\.png: the model failed on it \(serving_encoded: '
                   r'element 0 of the batch: 7000 x 7000 = 49000000 pixels, '
                   r'over the limit of 40000000', result.stderr), log[-3000:]
  assert 'skipped 2 file(s)' in result.stderr
  assert 'Traceback' not in log
  predicted = {os.path.basename(path) for path in re.findall(
      r'^(\S+): \d+ detections >= 0 ', result.stdout, re.M)}
  expected = set(files) - {'c_bomb.png', 'e_large.png'}
  assert predicted == expected
  with open(output_dir / 'results.json') as f:
    results = json.load(f)
  # Image ids are positions among the matched files, from 1.
  ids = {sorted(files).index(name) + 1 for name in expected}
  assert {r['image_id'] for r in results} == ids
  for name in expected:
    assert (output_dir / f'{os.path.splitext(name)[0]}_predictions.png'
            ).exists()
  assert not list(output_dir.glob('.results.json.*'))


def test_bomb_header_is_read_without_decoding(tmp_path):
  """The issue's file: 20000 x 20000 pixels in a few hundred KB. Sized from
  its header and refused, naming the file, with no decode (peak memory
  stays far below its 1.2 GB of RGB); PIL's own bomb check does not get
  in the way."""
  path = tmp_path / 'bomb.png'
  path.write_bytes(hostile.png_bomb(20000, 20000))
  assert os.path.getsize(path) < 1_000_000
  assert image_files.header_size(str(path)) == (20000, 20000)
  measured = hostile.peak_memory_reset()
  before = hostile.peak_memory_mb()
  with pytest.raises(ValueError, match=re.escape(
      f'{path}: 20000 x 20000 = 400000000 pixels, over the limit of '
      '40000000 (--max_image_pixels; not decoded)')):
    image_files.decode(str(path), 40_000_000)
  if measured:
    assert hostile.peak_memory_mb() - before < 100


def test_pillow_decodes_the_pixels_tensorflow_decodes(tmp_path):
  """bin/predict --onnx decodes with Pillow: grey, RGBA, palette, 16-bit
  PNGs, BMP and an animated GIF give TensorFlow's pixels; an empty or
  unidentifiable file is named with the reason, as a truncated one."""
  import numpy as np
  rng = np.random.default_rng(0)
  pictures = {
      'grey.png': Image.fromarray(rng.integers(0, 256, (9, 7), np.uint8)),
      'rgba.png': Image.fromarray(rng.integers(0, 256, (6, 8, 4), np.uint8)),
      'palette.png': Image.fromarray(
          rng.integers(0, 256, (5, 9, 3), np.uint8)).convert('P'),
      'sixteen.png': Image.fromarray(
          rng.integers(0, 65536, (7, 5)).astype(np.uint16)),
      'image.bmp': Image.fromarray(rng.integers(0, 256, (4, 6, 3), np.uint8)),
  }
  for name, picture in pictures.items():
    picture.save(tmp_path / name)
  frames = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8))
            for _ in range(2)]
  frames[0].save(tmp_path / 'anim.gif', save_all=True,
                 append_images=frames[1:])
  for name in [*pictures, 'anim.gif']:
    path = str(tmp_path / name)
    _, want = image_files.decode(path, 1000)
    _, got = image_files.decode(path, 1000, tensorflow=False)
    np.testing.assert_array_equal(got, want, err_msg=name)
  (tmp_path / 'empty.png').write_bytes(b'')
  (tmp_path / 'text.png').write_bytes(b'hello' * 20)
  (tmp_path / 'cut.png').write_bytes((tmp_path / 'rgba.png').read_bytes()[:60])
  for name, reason in (('empty.png', 'the file is empty'),
                       ('text.png', 'not a format Pillow reads'),
                       ('cut.png', 'truncated')):
    with pytest.raises(ValueError, match=f'{name}: cannot decode as an '
                       f'image .*{reason}'):
      image_files.decode(str(tmp_path / name), 1000, tensorflow=False)


def test_a_killed_run_keeps_the_results_it_flushed(exported_model, tmp_path):
  """--flush_seconds=0 rewrites results.json after every batch: SIGKILLed
  after its third image, the run has left the images it reported (all but
  perhaps the last, killed between its line and the write) in a whole
  results.json."""
  import signal
  folder = tmp_path / 'images'
  folder.mkdir()
  for index in range(12):
    (folder / f'{index:02d}.png').write_bytes(hostile.encode(40, 50))
  output_dir = tmp_path / 'out'
  process = subprocess.Popen(
      [sys.executable, PREDICT, f'--saved_model={exported_model["export_dir"]}',
       f'--images={folder}', f'--output_dir={output_dir}',
       '--flush_seconds=0', '--batch_size=1'],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  reported = 0
  for line in process.stdout:
    reported += bool(re.match(r'^\S+\.png: \d+ detections', line))
    if reported == 3:
      process.send_signal(signal.SIGKILL)
      break
  process.wait(timeout=60)
  assert reported == 3
  with open(output_dir / 'results.json') as f:
    kept = {r['image_id'] for r in json.load(f)}
  assert kept >= {1, 2}
