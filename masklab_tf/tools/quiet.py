"""Quiet tools by default: what a bin/ program prints is its own output.

TensorFlow prints lines that read like failures on every healthy CPU run
(`E ... failed call to cuInit` where no GPU exists, Grappler's
`Error in PredictCost()` for ops it has no cost model of, XLA and oneDNN
banners, absl INFO lines of the checkpointing code). None of them changes
what a tool computes, and a newcomer cannot tell them from a real error,
so every bin/ launcher calls `before_tensorflow()` before anything imports
TensorFlow and runs its tool through `run()`:

  * TF_CPP_MIN_LOG_LEVEL=3 (TensorFlow's C++ log lines below FATAL are
    dropped; it is read once, when the library loads, hence "before");
  * absl's Python logging at WARNING, the `tensorflow` logger at ERROR;
  * Python warnings raised from TensorFlow and tf_keras ignored.

Errors that stop a tool still reach the user: TensorFlow raises them as
Python exceptions with the message, and absl prints the traceback.
`--verbose` (on the command line or in a --flagfile) changes none of the
above, and an explicitly set TF_CPP_MIN_LOG_LEVEL or --verbosity is kept.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.util
import logging
import mmap
import os
import re
import sys
import warnings

from absl import app
from absl import flags
from absl import logging as absl_logging

QUIET_CPP_LOG_LEVEL = '3'  # 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR.
# absl::SetMinLogLevel(absl::LogSeverityAtLeast), its inline namespace
# (absl's LTS release) left open.
_ABSL_SET_MIN_LOG_LEVEL = re.compile(
    rb'_ZN4absl[0-9a-z_]*?14SetMinLogLevelE[0-9A-Za-z_]*?LogSeverityAtLeastE')
_ABSL_FATAL = 3  # absl::LogSeverityAtLeast::kFatal: fatal lines only.
_NOISY_MODULES = r'(tensorflow|tf_keras|keras|absl)(\.|$)'


def wants_verbose(argv: list[str]) -> bool:
  """Whether `argv` (without the program name) asks for --verbose, also
  through --flagfile files; the last setting wins, as absl reads them."""
  verbose = False
  for arg in argv:
    if arg == '--':
      break
    name, _, value = arg.lstrip('-').partition('=')
    if not arg.startswith('-'):
      continue
    if name == 'flagfile' and value:
      verbose = _flagfile_verbose(value, verbose)
    elif name == 'verbose':
      verbose = value.lower() not in ('false', '0', 'no', 'f', 'n')
    elif name == 'noverbose':
      verbose = False
  return verbose


def _flagfile_verbose(path: str, verbose: bool, depth: int = 0) -> bool:
  if depth > 10:  # absl rejects flagfile cycles itself.
    return verbose
  try:
    with open(path) as f:
      lines = [line.strip() for line in f]
  except OSError:
    return verbose  # absl reports the missing file.
  for line in lines:
    if line.startswith('--flagfile='):
      verbose = _flagfile_verbose(line.split('=', 1)[1], verbose, depth + 1)
    elif line.lstrip('-').partition('=')[0] in ('verbose', 'noverbose'):
      verbose = wants_verbose([line])
  return verbose


def before_tensorflow(argv: list[str] | None = None) -> bool:
  """Silences TensorFlow's C++ logs and Python warnings unless --verbose.

  Must run before TensorFlow is first imported (its C++ side reads the
  log level once, when it loads). Returns whether the run is verbose.
  """
  verbose = wants_verbose(sys.argv[1:] if argv is None else argv)
  if not verbose:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', QUIET_CPP_LOG_LEVEL)
    warnings.filterwarnings('ignore', module=_NOISY_MODULES)
    logging.getLogger('tensorflow').setLevel(logging.ERROR)
    if os.environ['TF_CPP_MIN_LOG_LEVEL'] == QUIET_CPP_LOG_LEVEL:
      # When TensorFlow is first imported, not now: a tool that never
      # imports it (bin/predict --onnx, the data tools) never loads its
      # library (about 40 MB), and runs where it is not installed.
      sys.meta_path.insert(0, _OnTensorFlowImport())
  return verbose


class _OnTensorFlowImport(importlib.abc.MetaPathFinder):
  """Runs _quiet_absl_cpp_logs once, as `import tensorflow` starts, then
  steps aside; it finds nothing itself."""

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name == 'tensorflow':
      sys.meta_path.remove(self)
      _quiet_absl_cpp_logs()
    return None


def _quiet_absl_cpp_logs() -> None:
  """absl::SetMinLogLevel(kFatal) in TensorFlow's framework library.

  Parts of TensorFlow 2.20 (Grappler's cost estimator, XLA) log through
  absl's C++ logging, which TF_CPP_MIN_LOG_LEVEL does not reach: every
  CropAndResize in a graph printed a ~1,000-character "Error in
  PredictCost()" warning (Grappler has no cost model of that op and falls
  back to a default; tensorflow/tensorflow#56904), preceded by absl's
  "All log messages before absl::InitializeLog()" line. The library is
  loaded as importing TensorFlow loads it (the same file, once, its symbols
  local: global ones replaced OpenSSL's in hashlib, which then crashed),
  before TensorFlow's import loads it. Where anything is not as expected
  (another TensorFlow build, no such symbol), nothing is changed and those
  lines show.
  """
  try:
    spec = importlib.util.find_spec('tensorflow')
    if spec is None or spec.origin is None:
      return
    path = os.path.join(os.path.dirname(spec.origin),
                        'libtensorflow_framework.so.2')
    with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0,
                                          access=mmap.ACCESS_READ) as data:
      match = _ABSL_SET_MIN_LOG_LEVEL.search(data)
      symbol = match and match.group(0).decode()
    if not symbol:
      return
    library = ctypes.CDLL(path)
    getattr(library, symbol)(ctypes.c_int(_ABSL_FATAL))
  except (ImportError, OSError, AttributeError, TypeError, ValueError):
    return


def define_flag() -> None:
  """--verbose; before_tensorflow() has read it already, but absl must
  know every flag it is given."""
  flags.DEFINE_bool('verbose', False, 'Print everything TensorFlow and '
                    'absl log (C++ INFO / WARNING / ERROR lines, Python '
                    'warnings); by default only errors that stop the tool.')


def run(tool) -> None:
  """Defines `tool`'s flags and --verbose, then app.run(tool.main) with
  absl's logging at WARNING unless --verbose or --verbosity says more."""
  tool.define_flags()
  define_flag()

  def main(argv):
    verbosity_set = flags.FLAGS['verbosity'].present
    if not flags.FLAGS.verbose and not verbosity_set:
      absl_logging.set_verbosity(absl_logging.WARNING)
    return tool.main(argv)

  app.run(main)
