"""Base of the training graph's sampling layers: a random stream of their own
that checkpoints carry.

Op-seeded stateful random ops (`tf.random.uniform(seed=...)`) restart their
stream in every new process, so a run resumed from a checkpoint would draw
other anchor and RoI samples than the run it continues. A
`tf.random.Generator` keeps its state in a variable: tracked by the layer, it
is saved and restored with the training model's checkpoint, and a resumed
run draws exactly what an uninterrupted one would. Created where the model is
built (under the distribution strategy's scope), it gives each replica a
stream of its own. It is not one of the layer's `weights`, and the inference
graph has no sampler, so SavedModels do not change.
"""

from __future__ import annotations

import random

import tensorflow as tf
import tf_keras


class SamplerLayer(tf_keras.layers.Layer):
  """A layer that draws uniform noise from its own checkpointed generator."""

  def __init__(self, seed: int | None = None, **kwargs):
    """Args: seed: the generator's seed; None: drawn from Python's `random`,
    which `tf_keras.utils.set_random_seed` (the trainer's --seed) seeds, so
    a seeded program builds the same generators every time."""
    super().__init__(**kwargs)
    self.seed = seed

  def build(self, input_shape):
    seed = self.seed if self.seed is not None else random.randint(
        1, 2**31 - 1)
    self._generator = tf.random.Generator.from_seed(seed)
    super().build(input_shape)

  def uniform(self, shape) -> tf.Tensor:
    """float32 draws in [0, 1) of `shape`, advancing the generator."""
    return self._generator.uniform(shape)

  def get_config(self):
    return {**super().get_config(), 'seed': self.seed}
