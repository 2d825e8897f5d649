"""Base of the training graph's sampling layers: a random stream of their own
that checkpoints carry.

Op-seeded stateful random ops (`tf.random.uniform(seed=...)`) restart their
stream in every new process, so a run resumed from a checkpoint would draw
other anchor and RoI samples than the run it continues. A
`tf.random.Generator` keeps its state in a variable: tracked by the layer, it
is saved and restored with the training model's checkpoint, and a resumed
run draws exactly what an uninterrupted one would. Created where the model is
built (under the distribution strategy's scope), it gives each replica a
stream of its own.

The generator is kept out of Keras' tracking: the model's checkpoints and
weights stay what they were (bin/export and load_model restore checkpoints
written before the generators existed, and the inference graph has no
sampler). The trainer saves the generators beside the model
(`generators`).
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
    # object.__setattr__: not a tracked dependency of the layer (see above).
    object.__setattr__(self, 'generator', tf.random.Generator.from_seed(seed))
    super().build(input_shape)

  def uniform(self, shape) -> tf.Tensor:
    """float32 draws in [0, 1) of `shape`, advancing the generator."""
    return self.generator.uniform(shape)

  def get_config(self):
    return {**super().get_config(), 'seed': self.seed}


def generators(model: tf_keras.Model) -> dict[str, tf.random.Generator]:
  """Layer name -> generator of `model`'s built sampler layers: what a
  training checkpoint saves beside the model."""
  return {layer.name: layer.generator for layer in model.layers
          if isinstance(layer, SamplerLayer) and layer.built}
