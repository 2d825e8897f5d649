"""The serving suite's test images: a client's photo, not noise."""

import numpy as np
import tensorflow as tf

from benchmarks.suites import serving


def test_images_encode_to_a_photos_jpeg_not_noises():
  images = serving.test_images(2, 160)
  assert images.dtype == np.uint8 and images.shape == (2, 160, 160, 3)
  np.testing.assert_array_equal(images, serving.test_images(2, 160))
  noise = np.random.default_rng(0).integers(0, 256, images.shape[1:],
                                            dtype=np.uint8)
  size = len(tf.io.encode_jpeg(images[0], quality=90).numpy())
  assert size * 2 < len(tf.io.encode_jpeg(noise, quality=90).numpy())
