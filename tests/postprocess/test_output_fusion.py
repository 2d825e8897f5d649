"""Output fusion on hand-checkable toys, and TF against the numpy BFS."""

import numpy as np
import pytest
import tensorflow as tf

from masklab_tf import visualize
from masklab_tf.postprocess import output_fusion


def _masks(shape, *pixel_lists):
  """uint8 [N, *shape] masks, mask n set at pixel_lists[n]."""
  masks = np.zeros([len(pixel_lists), *shape], np.uint8)
  for n, pixels in enumerate(pixel_lists):
    for pixel in pixels:
      masks[(n, *pixel)] = 1
  return masks


def _both(semantic, masks, classes, scores, **kwargs):
  """fuse_np's result, after checking that fuse gives exactly the same."""
  want = output_fusion.fuse_np(semantic, masks, classes, scores, **kwargs)
  got = output_fusion.fuse(semantic, masks, classes, scores, **kwargs)
  for w, g in zip(want, got):
    assert g.dtype == tf.int32 and w.dtype == np.int32
    np.testing.assert_array_equal(g.numpy(), w)
  return want


def test_growth_along_a_path_and_an_isolated_segment():
  # One row: the instance covers pixel 1; 2..4 are class 1 and connected
  # to it; 6 is class 1 behind background; 8 is class 2.
  semantic = np.array([[0, 1, 1, 1, 1, 0, 1, 0, 2]])
  masks = _masks(semantic.shape, [(0, 0), (0, 1)])   # (0, 0): background
  category, instance, new = _both(semantic, masks, [1], [0.9])
  np.testing.assert_array_equal(instance, [[0, 1, 1, 1, 1, 0, 2, 0, 3]])
  np.testing.assert_array_equal(category, [[0, 1, 1, 1, 1, 0, 1, 0, 2]])
  np.testing.assert_array_equal(new, [1, 2])


def test_inconsistent_pixels_are_dropped():
  # The class 1 instance covers a background pixel and a class 2 pixel:
  # both leave it; the class 2 pixel becomes a new class 2 instance.
  semantic = np.array([[1, 1, 2, 0]])
  masks = _masks(semantic.shape, [(0, 0), (0, 1), (0, 2), (0, 3)])
  category, instance, new = _both(semantic, masks, [1], [0.9])
  np.testing.assert_array_equal(instance, [[1, 1, 2, 0]])
  np.testing.assert_array_equal(category, [[1, 1, 2, 0]])
  np.testing.assert_array_equal(new, [2])


def test_overlap_goes_to_the_higher_score():
  semantic = np.ones([1, 4], np.int32)
  masks = _masks(semantic.shape, [(0, 0), (0, 1), (0, 2)],
                 [(0, 1), (0, 2), (0, 3)])
  _, instance, _ = _both(semantic, masks, [1, 1], [0.3, 0.8])
  np.testing.assert_array_equal(instance, [[1, 2, 2, 2]])
  # Equal scores: the earlier instance wins.
  _, instance, _ = _both(semantic, masks, [1, 1], [0.5, 0.5])
  np.testing.assert_array_equal(instance, [[1, 1, 1, 2]])


def test_an_overlap_loser_of_another_class_keeps_nothing_it_disagrees_with():
  # Instance 2 (class 2) outscores instance 1 but the pixels say class 1:
  # consistency is checked before overlap, so instance 1 keeps them.
  semantic = np.ones([1, 2], np.int32)
  masks = _masks(semantic.shape, [(0, 0), (0, 1)], [(0, 0), (0, 1)])
  category, instance, new = _both(semantic, masks, [1, 2], [0.1, 0.9])
  np.testing.assert_array_equal(instance, [[1, 1]])
  np.testing.assert_array_equal(category, [[1, 1]])
  assert new.size == 0


def test_equidistant_pixel_takes_the_smallest_id():
  # Pixel 1 is one step from instance 2 (at pixel 0, first in raster
  # order) and from instance 1 (at pixel 2): the smaller id wins, not the
  # first one a raster-order queue reaches.
  semantic = np.ones([1, 4], np.int32)
  masks = _masks(semantic.shape, [(0, 2)], [(0, 0)])
  _, instance, _ = _both(semantic, masks, [1, 1], [0.5, 0.9])
  np.testing.assert_array_equal(instance, [[2, 1, 1, 1]])


def test_growth_follows_the_geodesic_distance():
  # Instance 2 is nearer to pixel (0, 2) as the crow flies but the path
  # from it runs round a background wall: instance 1 reaches it first.
  semantic = np.array([[1, 1, 1, 1],
                       [0, 0, 0, 1],
                       [1, 1, 1, 1]])
  masks = _masks(semantic.shape, [(0, 0)], [(2, 2)])
  _, instance, _ = _both(semantic, masks, [1, 1], [0.5, 0.5])
  np.testing.assert_array_equal(instance, [[1, 1, 1, 1],
                                           [0, 0, 0, 2],
                                           [2, 2, 2, 2]])


@pytest.mark.parametrize('connectivity, expected', [
    (4, [[1, 0], [0, 2]]),     # the diagonal pixel is isolated: new id
    (8, [[1, 0], [0, 1]]),     # one diagonal step: it joins the instance
])
def test_connectivity(connectivity, expected):
  semantic = np.array([[1, 0], [0, 1]])
  masks = _masks(semantic.shape, [(0, 0)])
  _, instance, _ = _both(semantic, masks, [1], [0.9],
                         connectivity=connectivity)
  np.testing.assert_array_equal(instance, expected)


def test_new_instances_in_raster_order_of_their_first_pixel():
  # Three isolated segments, no instances; the L-shaped one starts first
  # even though most of it lies lower. Classes 2 and 3 touch but differ.
  semantic = np.array([[0, 3, 0, 0],
                       [0, 3, 3, 2],
                       [1, 0, 0, 2]])
  category, instance, new = _both(semantic, np.zeros([0, 3, 4], np.uint8),
                                  np.zeros([0]), np.zeros([0]))
  np.testing.assert_array_equal(instance, [[0, 1, 0, 0],
                                           [0, 1, 1, 2],
                                           [3, 0, 0, 2]])
  np.testing.assert_array_equal(category, semantic)
  np.testing.assert_array_equal(new, [3, 2, 1])


@pytest.mark.parametrize('connectivity', [4, 8])
def test_winding_segments_label_as_one(connectivity):
  # A spiral (one segment however it winds), a U that opens upwards (its
  # right arm starts on the first row too) and a diagonal staircase (one
  # segment with 8-connectivity, four with 4).
  spiral = np.array([[1, 1, 1, 1, 1, 1],
                     [0, 0, 0, 0, 0, 1],
                     [1, 1, 1, 1, 0, 1],
                     [1, 0, 0, 1, 0, 1],
                     [1, 0, 0, 0, 0, 1],
                     [1, 1, 1, 1, 1, 1]])
  u_shape = np.array([[2, 0, 2], [2, 0, 2], [2, 2, 2], [0, 0, 0],
                      [0, 0, 0], [0, 0, 0]])
  stairs = np.eye(6, dtype=np.int64)[:, ::-1] * 3
  semantic = np.concatenate([spiral, np.zeros([6, 1], np.int64), u_shape,
                             np.zeros([6, 1], np.int64), stairs], axis=1)
  _, instance, new = _both(semantic, np.zeros([0, 6, 17], np.uint8),
                           np.zeros([0]), np.zeros([0]),
                           connectivity=connectivity)
  # Raster order of first pixels: spiral, U, then the stairs' steps.
  np.testing.assert_array_equal(
      new, [1, 2, 3] if connectivity == 8 else [1, 2] + [3] * 6)
  np.testing.assert_array_equal(np.unique(instance[:, :6]), [0, 1])
  np.testing.assert_array_equal(np.unique(instance[:, 7:10]), [0, 2])
  assert instance[0, 9] == 2                           # the U's right arm
  assert len(np.unique(instance[:, 11:])) == 1 + len(new) - 2


def test_padding_rows_keep_their_ids():
  # Serving outputs are padded to D rows of class 0: they get no pixels,
  # and new instances are numbered after them.
  semantic = np.array([[1, 0, 1]])
  masks = _masks(semantic.shape, [(0, 0)], [(0, 2)])
  _, instance, _ = _both(semantic, masks, [1, 0], [0.9, 0.0])
  np.testing.assert_array_equal(instance, [[1, 0, 3]])


def test_class_groups_match_at_category_level():
  # Classes 1 and 2 share category 1 (say person and rider); class 3 is
  # stuff (category 0). The class 2 detection keeps the class 1 pixels and
  # names them class 2; it grows over them but not into stuff, which keeps
  # its semantic class and no instance.
  semantic = np.array([[1, 1, 2, 3, 1]])
  masks = _masks(semantic.shape, [(0, 0), (0, 3)])
  category, instance, new = _both(semantic, masks, [2], [0.9],
                                  class_groups=[0, 1, 1, 0])
  np.testing.assert_array_equal(instance, [[1, 1, 1, 0, 2]])
  np.testing.assert_array_equal(category, [[2, 2, 2, 3, 1]])
  np.testing.assert_array_equal(new, [1])


def test_serving_padding_label_is_background():
  semantic = np.array([[1, -1, 1]])
  category, instance, _ = _both(semantic, _masks([1, 3], [(0, 1)]), [1],
                                [0.9])
  np.testing.assert_array_equal(instance, [[2, 0, 3]])
  np.testing.assert_array_equal(category, [[1, 0, 1]])


def _random_scene(seed, size=24, num_classes=3, num_instances=6):
  """Blobby semantic map (rectangles over background, some noise) and
  rectangle instances seeded inside it, mostly of the class they land on,
  some of another; scores from a small set, so some tie."""
  rng = np.random.default_rng(seed)
  semantic = np.zeros([size, size], np.int32)
  for _ in range(12):
    y, x = rng.integers(0, size, 2)
    h, w = rng.integers(3, 12, 2)
    semantic[y:y + h, x:x + w] = rng.integers(0, num_classes + 1)
  noise = rng.random([size, size]) < 0.03
  semantic[noise] = rng.integers(0, num_classes + 1, noise.sum())
  masks = np.zeros([num_instances, size, size], np.uint8)
  classes = rng.integers(1, num_classes + 1, num_instances)
  foreground = np.argwhere(semantic > 0)
  for n in range(num_instances):
    y, x = foreground[rng.integers(len(foreground))]
    if rng.random() < 0.8:
      classes[n] = semantic[y, x]
    h, w = rng.integers(1, 6, 2)
    masks[n, max(y - h, 0):y + h, max(x - w, 0):x + w] = 1
  scores = rng.choice([0.2, 0.5, 0.7], num_instances).astype(np.float32)
  return semantic, masks, classes, scores


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('connectivity', [4, 8])
def test_tf_matches_numpy_on_random_scenes(seed, connectivity):
  semantic, masks, classes, scores = _random_scene(seed)
  category, instance, new = _both(semantic, masks, classes, scores,
                                  connectivity=connectivity)
  # Every foreground pixel ends in an instance, background in none, and
  # the new instances' classes are those of their pixels.
  np.testing.assert_array_equal(instance > 0, semantic > 0)
  num = len(classes)
  for i, cls in enumerate(new):
    pixels = instance == num + 1 + i
    assert pixels.any() and (category[pixels] == cls).all()
  assert instance.max() == num + len(new) or not len(new)


@pytest.mark.parametrize('seed', range(2))
def test_the_portable_labelling_gives_the_same_maps(seed):
  """portable=True (the ONNX export's float64 segment minima) changes no
  pixel of the maps."""
  scene = _random_scene(seed)
  for want, got in zip(output_fusion.fuse(*scene),
                       output_fusion.fuse(*scene, portable=True)):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_fuse_runs_in_a_tf_function_with_unknown_shapes():
  semantic, masks, classes, scores = _random_scene(7)
  fused = tf.function(output_fusion.fuse, input_signature=[
      tf.TensorSpec([None, None], tf.int32),
      tf.TensorSpec([None, None, None], tf.uint8),
      tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)])
  got = fused(semantic, masks, classes.astype(np.int32), scores)
  want = output_fusion.fuse_np(semantic, masks, classes, scores)
  for w, g in zip(want, got):
    np.testing.assert_array_equal(g.numpy(), w)


def test_panoptic_png():
  category = np.array([[0, 3], [255, 1]])
  instance = np.array([[0, 300], [65535, 1]])
  png = visualize.panoptic_png(category, instance)
  assert png.dtype == np.uint8 and png.shape == (2, 2, 3)
  np.testing.assert_array_equal(png[0, 1], [3, 1, 44])      # 300 = 256 + 44
  np.testing.assert_array_equal(png[1, 0], [255, 255, 255])
  np.testing.assert_array_equal(
      output_fusion.panoptic_png_tf(category, instance).numpy(), png)
  decoded = png[..., 1].astype(int) * 256 + png[..., 2]
  np.testing.assert_array_equal(decoded, instance)
  with pytest.raises(ValueError):
    visualize.panoptic_png(category, instance + 1)
