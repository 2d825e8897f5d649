"""Mask heads by name: the one table the systems build them from.

Adding a head: a file in this folder with its tf_keras layer class, which
has a PREDICTS tuple (the dense maps it returns beside the mask logits:
heads/outputs.py) and a `from_model_config(cfg, geometry, endpoint_strides,
use_xla, gather_crops, **layer_kwargs)` classmethod that reads exactly the settings it
uses and rejects those it cannot honour (heads/head_config.py); then one
line in MASK_HEADS below. The head is then a system of its own
(`--mask_head=NAME`, modeling/systems/registry.py), trained, evaluated and
exported by the common tools. docs/design.md works an example through.
"""

from __future__ import annotations

from masklab_tf.modeling.heads import biseg_head
from masklab_tf.modeling.heads import fcis_head
from masklab_tf.modeling.heads import masklab_head

MASK_HEADS = {
    'masklab': masklab_head.MaskLabHead,
    'fcis': fcis_head.FcisHead,
    'biseg': biseg_head.BisegHead,
}


def get_mask_head_class(name: str) -> type:
  """The layer class registered as `name`."""
  if name not in MASK_HEADS:
    raise ValueError(f'unknown mask head {name!r}; available: '
                     f'{", ".join(sorted(MASK_HEADS))}')
  return MASK_HEADS[name]
