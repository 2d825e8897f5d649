"""The direction geometry against hand-computed cases and a numpy model."""

import math

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf.ops import direction
from reference import numpy_channel




@pytest.mark.parametrize('u, v, expected', [
    (0.0, 0.0, 0),      # centre: angle 0, distance 0
    (0.1, 0.0, 0),      # right, innermost ring
    (0.6, 0.0, 2),      # right, third ring
    (2.0, 0.0, 3),      # beyond the box: last ring
    (0.5, 0.2, 2),      # 21.8 degrees: direction 0, |.| = 0.54 -> ring 2
    (0.0, 0.9, 11),     # straight down (image y down): 90 deg -> d 2, ring 3
    (-0.3, 0.0, 17),    # left: 180 deg -> d 4, ring 1
    (-0.3, -0.1, 17),   # 198.4 deg -> d 4, |.| = 0.32 -> ring 1
    (0.0, -0.5, 26),    # up: 270 deg -> d 6, ring 2
    (0.1, -0.05, 28),   # 333.4 deg -> d 7, ring 0
])
def test_hand_computed_channels(u, v, expected):
  assert int(direction.direction_channel(u, v)) == expected


@pytest.mark.parametrize('num_directions, num_distance_bins',
                         [(8, 4), (8, 1), (4, 2), (6, 3), (2, 4)])
def test_matches_numpy_model(num_directions, num_distance_bins):
  rng = np.random.default_rng(0)
  u = rng.uniform(-1.5, 1.5, 5000).astype(np.float32)
  v = rng.uniform(-1.5, 1.5, 5000).astype(np.float32)
  got = direction.direction_channel(u, v, num_directions,
                                    num_distance_bins).numpy()
  want = numpy_channel(u.astype(np.float64), v.astype(np.float64),
                       num_directions, num_distance_bins)
  # float32 vs float64 may only disagree on the rare point within 1e-6 of a
  # bin border.
  assert np.mean(got != want) < 1e-3
  assert got.min() >= 0 and got.max() < num_directions * num_distance_bins


def test_crop_samples_include_both_edges():
  offsets = direction.crop_sample_offsets(41).numpy()
  assert offsets[0] == -1.0 and offsets[-1] == 1.0
  np.testing.assert_allclose(np.diff(offsets), 2 / 40, rtol=1e-5)


def test_pooling_index_map_layout():
  index = direction.pooling_index_map(41, 8, 4).numpy()
  assert index.shape == (41, 41)
  assert index[20, 20] == 0                  # centre
  assert index[20, 40] == 3                  # right edge: d 0, last ring
  assert index[40, 20] == 2 * 4 + 3          # bottom edge: 90 deg
  assert index[20, 0] == 4 * 4 + 3           # left edge: 180 deg
  assert index[0, 20] == 6 * 4 + 3           # top edge: 270 deg
  assert index[40, 40] == 1 * 4 + 3          # corner: 45 deg bin, last ring
  assert len(np.unique(index)) == 32         # every channel is used


def test_mirror_permutation_matches_geometry():
  perm = np.array(direction.mirror_channel_permutation(8, 4))
  rng = np.random.default_rng(1)
  u = rng.uniform(-1, 1, 2000)
  v = rng.uniform(-1, 1, 2000)
  np.testing.assert_array_equal(perm[numpy_channel(u, v)],
                                numpy_channel(-u, v))
  assert sorted(perm) == list(range(32))


def test_odd_direction_count_cannot_mirror():
  with pytest.raises(ValueError, match='even number'):
    direction.mirror_channel_permutation(7, 4)


def test_channel_is_float_safe_at_two_pi():
  # A tiny negative angle wraps to just below 2 pi, never to bin D.
  channel = direction.direction_channel(1.0, -1e-9)
  assert int(channel) // 4 == 7
  assert math.isclose(float(tf.math.floormod(-1e-9, 2 * math.pi)),
                      2 * math.pi, rel_tol=1e-6)


def test_crop_masks_convention_and_border():
  from masklab_tf.ops import crop
  mask = np.zeros([1, 20, 30], np.uint8)
  mask[0, 0:10, 5:25] = 1  # touches the top border
  crops = crop.crop_masks(mask, tf.constant([[0.0, 5.0, 10.0, 25.0]]),
                          11).numpy()[0]
  # Samples include both box edges: inner edges sit between a mask pixel and
  # a background pixel (0.5); the border edge reads the edge pixel (1).
  np.testing.assert_allclose(crops[0, 1:-1], 1.0)
  np.testing.assert_allclose(crops[-1, 1:-1], 0.5)
  np.testing.assert_allclose(crops[1:-1, 0], 0.5)
  np.testing.assert_allclose(crops[5, 5], 1.0)
