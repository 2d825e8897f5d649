"""Flags several tools share, defined once (each tool calls these from its
own define_flags)."""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from masklab_tf import config
from masklab_tf.data import coco

FLAGS = flags.FLAGS


def define_dataset_flags(default_verify: str | None = 'full') -> None:
  """--annotations and --images: a COCO json and its image folder; with
  `default_verify`, --verify_images too (how closely to check the images:
  data/coco.py)."""
  flags.DEFINE_string('annotations', None, 'COCO instances json.')
  flags.DEFINE_string('images', None, 'Folder of the images named in the json.')
  if default_verify is not None:
    flags.DEFINE_enum('verify_images', default_verify, list(coco.VERIFY_MODES),
                      'none: trust the json sizes; header: open each image; '
                      'full: also decode every pixel.')


def define_checkpoint_flags() -> None:
  """--model_dir (a bin/train directory) and --checkpoint (default: its
  latest)."""
  flags.DEFINE_string('model_dir', None, 'Training directory (bin/train '
                      '--model_dir).')
  flags.DEFINE_string('checkpoint', '', 'Checkpoint path (default: the latest '
                      'in --model_dir).')


def command_line_flags(argv: list[str]) -> set[str]:
  """The names of the flags `argv` sets itself, not through --flagfile
  (`--name=value`, `--name value`, `--name`, `--noname`)."""
  names = set()
  for arg in argv:
    if not arg.startswith('-') or arg == '--':
      continue
    name = arg.lstrip('-').split('=')[0]
    if name not in FLAGS and name.startswith('no') and name[2:] in FLAGS:
      name = name[2:]
    if name in FLAGS and name != 'flagfile':
      names.add(name)
  return names


def run_configs(model_dir: str, argv: list[str] | None = None
                ) -> config.Configs:
  """The configs a bin/train run was trained with (its configs.json), with
  the config flags `argv` (default: this program's command line) names
  itself on top, each one that differs from the run's said in a warning.
  Values a --flagfile sets do not apply: the run's configs.json is the
  truth of the model. Without configs.json, the flags, as given.

  Raises:
    app.UsageError: configs.json cannot be read.
  """
  path = os.path.join(model_dir or '', config.CONFIGS_FILE)
  if not model_dir or not os.path.exists(path):
    if model_dir:
      logging.warning('%s: no configs.json; the model is built from the '
                      'flags', model_dir)
    return config.all_from_flags()
  try:
    trained = config.from_json(path)
  except (OSError, ValueError, TypeError) as error:
    raise app.UsageError(f'{path}: cannot read the run\'s configs: {error}')
  run_values = config.flag_values_of(trained)
  flag_values = config.flag_values_of(config.all_from_flags())
  given = command_line_flags(sys.argv[1:] if argv is None else argv)
  differ = {name for name, value in run_values.items()
            if FLAGS[name].present and flag_values[name] != value}
  for name in sorted(given & differ):
    logging.warning('--%s=%s overrides the run\'s %s (%s)', name,
                    _shown(flag_values[name]), _shown(run_values[name]), path)
  ignored = sorted(differ - given)
  if ignored:
    logging.warning('%s: the run was trained with %s; the --flagfile '
                    'values of these are not used (give one on the command '
                    'line to override it)', path,
                    ', '.join(f'--{name}={_shown(run_values[name])}'
                              for name in ignored))
  return config.replace_flags(
      trained, {name: flag_values[name] for name in given & set(run_values)})


def _shown(value) -> str:
  if isinstance(value, (tuple, list)):
    return ','.join(str(v) for v in value)
  return str(value)
