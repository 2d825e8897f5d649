"""Runs a masklab_tf.tools module's main in the test process, as its bin/
launcher would: a subprocess pays seconds of TensorFlow import and of
autograph conversion that the test process has already done."""

import contextlib

from absl import flags


@contextlib.contextmanager
def tool_flags(tool, *args):
  """Defines `tool`'s flags on absl's FLAGS, parses `args` as its command
  line and yields the remaining argv (for tool.main); then removes those
  flags again, so that other tools can define theirs."""
  before = set(flags.FLAGS)
  was_parsed = flags.FLAGS.is_parsed()
  tool.define_flags()
  try:
    yield flags.FLAGS([tool.__name__, *args])
  finally:
    for name in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, name)
    if not was_parsed:
      flags.FLAGS.unparse_flags()
