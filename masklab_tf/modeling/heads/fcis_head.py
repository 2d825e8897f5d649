"""FCIS's mask head, as BiSeg (Pham et al., BMVC 2017, sec. 2) describes it.

2 k^2 (C+1) inside/outside position-sensitive maps on res5 (k = 7),
assembled per box for its class. The foreground probability is the softmax
over (inside, outside), i.e. sigmoid(inside - outside), so the mask logit is
inside - outside. FCIS also scores the class by average pooling
max(inside, outside); here the box classifier scores classes (as for
MaskLab), which keeps the comparison about masks.
"""

from __future__ import annotations

import tf_keras

from masklab_tf.modeling.heads import outputs as outputs_lib
from masklab_tf.modeling.heads import position_sensitive


@tf_keras.utils.register_keras_serializable(package='masklab')
class FcisHead(position_sensitive.PositionSensitiveHead):
  """FCIS: mask logit = inside - outside of the res5 maps (see module)."""

  NAME = 'fcis'

  def call(self, endpoints, boxes, classes, training=None):
    """As MaskLabHead.call; returns the dict of heads/outputs.py."""
    features = self.reduce(endpoints['res5'])
    inside, outside = self.inside_outside(self.score_maps(features), boxes,
                                          classes)
    logits = inside - outside
    return {outputs_lib.SEMANTIC_LOGITS: self.semantic_conv(features),
            outputs_lib.COARSE_MASK_LOGITS: logits,
            outputs_lib.MASK_LOGITS: logits}
