"""Flags several tools share, defined once (each tool calls these from its
own define_flags)."""

from absl import flags

from masklab_tf.data import coco


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
