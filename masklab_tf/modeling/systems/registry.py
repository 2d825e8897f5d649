"""Every system of the paper family by name (the --mask_head flag).

Each mask head of heads/registry.py is a Faster R-CNN system of its own;
MaskLab's feature ablations (paper Table 2) and InstanceFCN, which has no
box branch, are added here. This is the one place that decides what runs.
"""

from __future__ import annotations

import functools
from typing import Callable

from masklab_tf import config as config_lib
from masklab_tf.modeling.heads import registry as heads_registry
from masklab_tf.modeling.systems import base
from masklab_tf.modeling.systems import instancefcn
from masklab_tf.modeling.systems import masklab

SYSTEMS: dict[str, Callable[..., base.System]] = {
    **{name: functools.partial(masklab.MaskLabSystem, head=name)
       for name in heads_registry.MASK_HEADS},
    'masklab_semantic_only': functools.partial(
        masklab.MaskLabSystem, head='masklab', mask_features='semantic'),
    'masklab_direction_only': functools.partial(
        masklab.MaskLabSystem, head='masklab', mask_features='direction'),
    'instancefcn': instancefcn.InstanceFcnSystem,
}


def available_systems() -> list[str]:
  return sorted(SYSTEMS)


def get_system(cfg: config_lib.ModelConfig,
               geometry: config_lib.GeometryConfig | None = None
               ) -> base.System:
  """The system cfg.mask_head names; raises on an unknown name or on a
  setting the system cannot honour."""
  if cfg.mask_head not in SYSTEMS:
    raise ValueError(f'--mask_head={cfg.mask_head}: unknown; available: '
                     f'{", ".join(available_systems())}')
  return SYSTEMS[cfg.mask_head](cfg.mask_head, cfg, geometry)
