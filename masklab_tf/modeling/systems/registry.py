"""Every system of the paper family by name (the --mask_head flag).

Each mask head of heads/registry.py is a Faster R-CNN system of its own,
looked up when a system is asked for (so a head added to that table is a
system at once); MaskLab's feature ablations (paper Table 2),
InstanceFCN, which has no box branch, and the semantic-segmentation
pretraining stage (paper Table 6 "Seg") are listed here. This is the one
place that decides what runs.
"""

from __future__ import annotations

import functools
from typing import Callable

from masklab_tf import config as config_lib
from masklab_tf.modeling.heads import registry as heads_registry
from masklab_tf.modeling.systems import base
from masklab_tf.modeling.systems import instancefcn
from masklab_tf.modeling.systems import masklab
from masklab_tf.modeling.systems import semantic_segmentation

# Systems that are not simply "Faster R-CNN with the head of that name".
OTHER_SYSTEMS: dict[str, Callable[..., base.System]] = {
    'masklab_semantic_only': functools.partial(
        masklab.MaskLabSystem, head='masklab', mask_features='semantic'),
    'masklab_direction_only': functools.partial(
        masklab.MaskLabSystem, head='masklab', mask_features='direction'),
    'instancefcn': instancefcn.InstanceFcnSystem,
    semantic_segmentation.NAME:
        semantic_segmentation.SemanticSegmentationSystem,
}


def available_systems() -> list[str]:
  return sorted(set(heads_registry.MASK_HEADS) | set(OTHER_SYSTEMS))


def get_system(cfg: config_lib.ModelConfig,
               geometry: config_lib.GeometryConfig | None = None
               ) -> base.System:
  """The system cfg.mask_head names; raises on an unknown name or on a
  setting the system cannot honour."""
  name = cfg.mask_head
  if name in OTHER_SYSTEMS:
    return OTHER_SYSTEMS[name](name, cfg, geometry)
  if name in heads_registry.MASK_HEADS:
    return masklab.MaskLabSystem(name, cfg, geometry, head=name)
  raise ValueError(f'--mask_head={name}: unknown; available: '
                   f'{", ".join(available_systems())}')
