"""What a mask head returns, by name, with a sentence for what it lacks.

Every mask head is a tf_keras layer called as
  head(endpoints, boxes, classes) -> dict
(a dict, because Keras's functional graphs carry dicts of tensors). The
keys are MASK_LOGITS and COARSE_MASK_LOGITS always, plus the dense maps the
head predicts (its class attribute PREDICTS). Losses and post-processing
read them through `MaskHeadOutputs`, so that asking a head for a map it
does not predict (a direction loss on FCIS) says so in a sentence, where a
dict lookup would end in a bare KeyError deep inside a training step.
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf

MASK_LOGITS = 'mask_logits'
COARSE_MASK_LOGITS = 'coarse_mask_logits'
SEMANTIC_LOGITS = 'semantic_logits'
DIRECTION_LOGITS = 'direction_logits'
DENSE_MAPS = (SEMANTIC_LOGITS, DIRECTION_LOGITS)


class MissingOutputError(ValueError):
  """A head was asked for an output it does not predict."""


class MaskHeadOutputs:
  """A mask head's outputs.

  Attributes:
    mask_logits: [B, N, S, S] box-relative mask logits (refined if the head
      refines).
    coarse_mask_logits: [B, N, S, S] before refinement (the same tensor for
      heads without refinement).
    semantic_logits, direction_logits: [B, h, w, C] dense maps at the head's
      feature stride; reading one that the head does not predict raises
      MissingOutputError naming the head.
  """

  def __init__(self, head: str, outputs: Mapping[str, tf.Tensor]):
    """Args: head: the head's registry name (for messages); outputs: the
    head's dict, or a model's outputs that include it."""
    self.head = head
    self._outputs = outputs

  @property
  def mask_logits(self) -> tf.Tensor:
    return self._outputs[MASK_LOGITS]

  @property
  def coarse_mask_logits(self) -> tf.Tensor:
    return self._outputs[COARSE_MASK_LOGITS]

  @property
  def semantic_logits(self) -> tf.Tensor:
    return self.dense(SEMANTIC_LOGITS)

  @property
  def direction_logits(self) -> tf.Tensor:
    return self.dense(DIRECTION_LOGITS)

  def has(self, name: str) -> bool:
    return name in self._outputs

  def dense(self, name: str, wanted_by: str = '') -> tf.Tensor:
    """The dense map `name`; `wanted_by` names the setting that asked."""
    if name not in self._outputs:
      reason = f' ({wanted_by} needs them)' if wanted_by else ''
      raise MissingOutputError(
          f'the {self.head} mask head predicts no {name}{reason}')
    return self._outputs[name]
