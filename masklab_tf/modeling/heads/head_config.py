"""How a head reads the model config: exactly what it uses, and a clear
error for a setting it cannot honour.

A flags file serves several heads (the accuracy benchmark trains each on
configs/shapes_cpu.flags), so settings that only size a part another head
has (--hypercolumn_channels for FCIS) are left to that head. A setting that
asks a head for behaviour it does not have (--refine=false or
--mask_features=semantic on FCIS, a direction loss on a head without
direction logits) is an error that says what to change, never silently
dropped.
"""

from __future__ import annotations

from masklab_tf import config as config_lib


class UnsupportedSettingError(ValueError):
  """A config asks a head or system for something it does not do."""


def require(cfg: config_lib.ModelConfig, field: str, allowed: tuple,
            owner: str, why: str) -> None:
  """Raises unless cfg.<field> is one of `allowed`.

  Args:
    cfg: the model config.
    field: a ModelConfig field (also the flag's name).
    allowed: the values `owner` honours.
    owner: who is asking, e.g. 'the fcis mask head'.
    why: what to change, as a sentence fragment.
  """
  value = getattr(cfg, field)
  if value not in allowed:
    raise UnsupportedSettingError(
        f'--{field}={_flag_value(value)}: {owner} {why}')


def _flag_value(value) -> str:
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, tuple):
    return ','.join(str(v) for v in value)
  return str(value)
