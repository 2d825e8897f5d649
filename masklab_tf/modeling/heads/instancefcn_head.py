"""InstanceFCN's head (Dai et al., ECCV 2016, sec. 3.3, Fig. 4)."""

from __future__ import annotations

import tf_keras


@tf_keras.utils.register_keras_serializable(package='masklab')
class InstanceFcnHead(tf_keras.layers.Layer):
  """res5 -> (k^2 instance-sensitive score maps, objectness per window size).

  Score maps: 1x1 conv (512, ReLU) then 3x3 conv to k^2 channels;
  objectness: 3x3 conv (512, ReLU) then 1x1 conv to A channels (paper
  Fig. 4). New layers start from N(0, 0.01) as the paper's.
  """

  def __init__(self, grid_size: int = 5, num_window_sizes: int = 1,
               channels: int = 512, **kwargs):
    """Args: grid_size: k (paper: 5); num_window_sizes: A, objectness
    channels (one per window size); channels: width of the 512-d convs;
    **kwargs: tf_keras.layers.Layer arguments."""
    super().__init__(**kwargs)
    self.grid_size = grid_size
    self.num_window_sizes = num_window_sizes
    self.channels = channels

  def build(self, input_shape):
    def conv(filters, size, name, activation=None):
      return tf_keras.layers.Conv2D(
          filters, size, padding='same', activation=activation, name=name,
          kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01))
    self.score_reduce = conv(self.channels, 1, 'score_reduce', 'relu')
    self.score_maps = conv(self.grid_size ** 2, 3, 'score_maps')
    self.objectness_conv = conv(self.channels, 3, 'objectness_conv', 'relu')
    self.objectness = conv(self.num_window_sizes, 1, 'objectness')
    super().build(input_shape)

  def call(self, features):
    return (self.score_maps(self.score_reduce(features)),
            self.objectness(self.objectness_conv(features)))

  def get_config(self):
    return {**super().get_config(), 'grid_size': self.grid_size,
            'num_window_sizes': self.num_window_sizes,
            'channels': self.channels}
