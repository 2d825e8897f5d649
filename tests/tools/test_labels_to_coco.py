"""bin/labels_to_coco: a label image becomes a COCO set the project's reader
takes whole, tile by tile, with 16-bit images made visible."""

import numpy as np
from PIL import Image
import pytest

from masklab_tf.data import coco
from masklab_tf.tools import labels_to_coco

# 8 x 8 labels, three instances; label 7 crosses the tile border at x = 4
# and label 3 has one pixel, which --min_area=2 drops.
LABELS = np.array([
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 5, 5, 0, 0, 0, 0, 0],
    [0, 5, 5, 0, 0, 0, 3, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 7, 7, 7, 0, 0],
    [0, 0, 0, 7, 7, 7, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0]], np.uint16)


@pytest.fixture
def label_pair(tmp_path):
  """A 16-bit image (values 1000..1063, all below 256 * 4: the reader's
  high byte alone would make it black) and its 16-bit label image."""
  image = (1000 + np.arange(64).reshape(8, 8)).astype(np.uint16)
  Image.fromarray(image).save(tmp_path / 'cells.tif')
  Image.fromarray(LABELS).save(tmp_path / 'cells_labels.tif')
  return str(tmp_path / 'cells.tif'), str(tmp_path / 'cells_labels.tif')


def test_whole_image_round_trips_through_the_reader(label_pair, tmp_path):
  out = str(tmp_path / 'out')
  data = labels_to_coco.convert([label_pair], out, category='cell')
  dataset = coco.read_coco(f'{out}/annotations.json', f'{out}/images',
                           verify_images='full')
  assert not dataset.problems
  assert [c.name for c in dataset.categories] == ['cell']
  (record,) = dataset.records
  masks = dataset.load_masks(record)
  assert sorted(int(m.sum()) for m in masks) == [1, 4, 6]
  # Each mask is exactly one label's pixels.
  for mask in masks:
    values = np.unique(LABELS[mask.astype(bool)])
    assert len(values) == 1 and values[0] > 0
    assert mask.sum() == (LABELS == values[0]).sum()
  pixels = dataset.load_image(record)[:, :, 0]
  assert pixels.min() == 0 and pixels.max() == 255
  assert labels_to_coco.summary_lines(data)[0] == (
      'images=1 instances=3 most in one image=3')


def test_tiles_split_instances_and_keep_the_chosen_numbers(label_pair,
                                                           tmp_path):
  out = str(tmp_path / 'out')
  data = labels_to_coco.convert([label_pair], out, tile_size=4,
                                tiles=['0', '3'], min_area=2)
  assert [i['file_name'] for i in data['images']] == ['cells_0.png',
                                                      'cells_3.png']
  # Tile 0 (top left): label 5; tile 3 (bottom right): the two right
  # columns of label 7. Tile 1's one-pixel label 3 was not asked for.
  assert [(a['image_id'], a['area'], a['bbox']) for a in
          data['annotations']] == [(1, 4, [1.0, 1.0, 2.0, 2.0]),
                                   (2, 4, [0.0, 0.0, 2.0, 2.0])]
  with Image.open(f'{out}/images/cells_3.png') as tile:
    assert tile.size == (4, 4) and tile.mode == 'L'
  with pytest.raises(Exception, match='--tiles numbers the tiles'):
    labels_to_coco.convert([label_pair], out, tiles=['3'])


def test_min_area_drops_specks(label_pair, tmp_path):
  data = labels_to_coco.convert([label_pair], str(tmp_path / 'out'),
                                min_area=2)
  assert sorted(a['area'] for a in data['annotations']) == [4, 6]


def test_folders_pair_by_name(tmp_path):
  (tmp_path / 'images').mkdir()
  (tmp_path / 'labels').mkdir()
  for stem in ('a', 'b'):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(
        tmp_path / 'images' / f'{stem}.png')
    Image.fromarray(LABELS).save(tmp_path / 'labels' / f'{stem}.tif')
  found = labels_to_coco.pairs(str(tmp_path / 'images'),
                               str(tmp_path / 'labels'))
  assert [(p.split('/')[-1], q.split('/')[-1]) for p, q in found] == [
      ('a.png', 'a.tif'), ('b.png', 'b.tif')]
  (tmp_path / 'images' / 'c.png').write_bytes(b'')
  with pytest.raises(Exception, match='no label image for c.png'):
    labels_to_coco.pairs(str(tmp_path / 'images'), str(tmp_path / 'labels'))


@pytest.mark.parametrize('policy,want_left,want_right', [
    # Label 7 (x 3..5) is cut by the column 4: clipped, a crowd region on
    # both sides, or gone.
    ('clip', [(4, 0), (2, 0)], [(1, 0), (4, 0)]),
    ('crowd', [(4, 0), (2, 1)], [(1, 0), (4, 1)]),
    ('drop', [(4, 0)], [(1, 0)]),
])
def test_columns_cut_halves_and_cut_instances_follow_the_policy(
    label_pair, tmp_path, policy, want_left, want_right):
  halves = {}
  for name, columns in (('left', '0:4'), ('right', '4:')):
    out = str(tmp_path / name)
    data = labels_to_coco.convert([label_pair], out, columns=columns,
                                  cut_instances=policy)
    assert data['images'][0]['width'] == 4
    halves[name] = sorted((a['area'], a['iscrowd'])
                          for a in data['annotations'])
    dataset = coco.read_coco(f'{out}/annotations.json', f'{out}/images',
                             verify_images='full')
    assert not dataset.problems
  assert halves['left'] == sorted(want_left)
  assert halves['right'] == sorted(want_right)
  if policy == 'crowd':
    assert labels_to_coco.summary_lines(data)[0] == (
        'images=1 instances=1 most in one image=1 crowd regions=1')
    # A cut part under --min_area is still a crowd region (not background);
    # label 3 (one pixel, whole) is dropped.
    data = labels_to_coco.convert([label_pair], str(tmp_path / 'small'),
                                  columns='0:4', cut_instances='crowd',
                                  min_area=3)
    assert [(a['area'], a['iscrowd']) for a in data['annotations']] == [
        (4, 0), (2, 1)]


def test_columns_are_checked(label_pair, tmp_path):
  for columns, why in (('4', 'not START:END'), ('5:2', 'START < END'),
                       ('9:', 'has 8 columns'), ('0:9', 'has 8 columns')):
    with pytest.raises(Exception, match=why):
      labels_to_coco.convert([label_pair], str(tmp_path / 'out'),
                             columns=columns)
