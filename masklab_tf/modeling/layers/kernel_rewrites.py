"""The convolution layers' kernel rewrites: one switch, decided in one place.

`AtrousConv2D` (atrous_conv.py), `AtrousBottleneckBlock`
(resnet_blocks.py) and `HaloTiledConv2D` (tiled_conv.py) compute what tf_keras's Conv2D and Model
Garden's BottleneckBlock compute, with the same weights, but may reach
other kernels on the way (`Rewrites`):

- native dilated kernels: a dilated conv on a map small against its rate
  calls tf.nn.conv2d with `dilations` instead of Keras's SpaceToBatchND
  detour, which runs it on tiles of a few pixels;
- sparse taps: a dilated conv whose taps mostly read 'same' padding runs
  as one matmul per tap on the window it reads;
- pointwise matmuls: stride-1 1x1 convs train as matmuls over the pixels;
- pixel tiles: the bottleneck block's 1x1 conv + batch norm (+ ReLU) run
  on 8 x 8 pixel tiles of the map (a free reshape);
- halo tiles: a stride-1 'same' conv at inference runs on tiles of the map
  that carry a halo of their neighbours.

Each pays on some kernels and costs on others, and each was measured on
2-core x86 CPUs only (docs/perf-notes.md). ModelConfig.kernel_rewrites
chooses between:

- 'auto' (`resolve`): the rewrites measured to pay on this host's kind of
  CPU kernels. On an x86 CPU with AVX-512 where TensorFlow runs oneDNN,
  all of them; on an x86 CPU where TensorFlow runs its own Eigen kernels,
  sparse taps only, on more maps (there they replace the SpaceToBatchND
  detour, whose gradients Eigen has no dilated kernel for). None on a host
  with a GPU or a TPU, or inside a TPUStrategy: the convs run there, where
  nothing was measured (cuDNN and XLA pick their own algorithms), and none
  on CPUs of other kinds, where nothing was measured either.
- 'off': none. Every layer runs its parent's call, so the model computes
  exactly what plain tf_keras / Model Garden layers compute.

The mode reaches the layers through `scope`, which factory.build_models
enters around model building as it does the precision scope: a layer made
inside takes the scope's mode unless given one, decides what it runs
there (`for_layer`), and keeps the mode, not the decision, in get_config,
so a copy made on another host decides again. No rewrite adds, drops or
renames a variable: a checkpoint written in one mode restores in the
other. A SavedModel, though, keeps the graph traced where it was exported:
export one for a GPU server with --kernel_rewrites=off (bin/export).
"""

from __future__ import annotations

import contextlib
import dataclasses

import tensorflow as tf

from masklab_tf import host as host_lib

AUTO = 'auto'
OFF = 'off'
MODES = (AUTO, OFF)


@dataclasses.dataclass(frozen=True)
class Rewrites:
  """Which rewrites a layer runs (the defaults: none).

  Attributes:
    native_dilation: dilated convs on small static maps call the native
      dilated kernel (atrous_conv.SMALL_TILE).
    max_sparse_tap_coverage: dilated 'same' convs whose share of in-map
      taps (atrous_conv.tap_coverage) is at most this run as sparse taps;
      0 never.
    pointwise_matmul: stride-1 1x1 convs run as matmuls in training.
    pixel_tiles: the bottleneck block's 1x1 triplets run on pixel tiles.
    halo_tiles: HaloTiledConv2D runs on tiles with halos at inference.
  """
  native_dilation: bool = False
  max_sparse_tap_coverage: float = 0.0
  pointwise_matmul: bool = False
  pixel_tiles: bool = False
  halo_tiles: bool = False


# Plain Keras everywhere.
NONE = Rewrites()
# x86 with AVX-512, TensorFlow's oneDNN kernels: every rewrite. Sparse taps
# up to half the nominal taps, since the native dilated kernel is there for
# the rest (docs/perf-notes.md#sparse-taps).
ONEDNN_X86 = Rewrites(native_dilation=True, max_sparse_tap_coverage=0.5,
                      pointwise_matmul=True, pixel_tiles=True,
                      halo_tiles=True)
# x86, TensorFlow's Eigen kernels: no native dilated gradients, so sparse
# taps replace SpaceToBatchND on denser maps too
# (docs/perf-notes.md#sparse-taps-without-onednn); the other rewrites were
# measured against oneDNN's kernels only and stay off.
EIGEN_X86 = Rewrites(max_sparse_tap_coverage=0.85)


def check(mode: str) -> None:
  """Raises ValueError unless `mode` is one of MODES."""
  if mode not in MODES:
    raise ValueError(f'kernel_rewrites={mode!r}: use one of '
                     f'{", ".join(repr(m) for m in MODES)}')


def _in_tpu_strategy() -> bool:
  """Whether layers are being made under a TPUStrategy (the TPU may be
  on another host, where `host_lib.tpu_present` does not see it)."""
  if not tf.distribute.has_strategy():
    return False
  return isinstance(tf.distribute.get_strategy(),
                    (tf.distribute.TPUStrategy,
                     tf.distribute.experimental.TPUStrategy))


def resolve(mode: str, machine: host_lib.Host | None = None) -> Rewrites:
  """The rewrites `mode` runs on `machine` (see the module docstring).

  Args:
    mode: 'auto' or 'off'.
    machine: the host to decide for; None: this one (host_lib.current()).

  Raises:
    ValueError: `mode` is none of MODES.
  """
  check(mode)
  if mode == OFF:
    return NONE
  machine = host_lib.current() if machine is None else machine
  if machine.accelerators or _in_tpu_strategy() or not machine.x86:
    return NONE
  if not machine.onednn:
    return EIGEN_X86
  # oneDNN was measured on AVX-512 CPUs only (TensorFlow turns it on by
  # itself on no others).
  return ONEDNN_X86 if 'avx512f' in machine.cpu_flags else NONE


# (mode, host or None for this one) of the enclosing `scope`s, innermost
# last. Layers are made on the thread that builds the model, as Keras's
# global policy assumes too.
_scopes: list[tuple[str, host_lib.Host | None]] = []


@contextlib.contextmanager
def scope(mode: str, machine: host_lib.Host | None = None):
  """Layers made inside that are given no mode take `mode`.

  Layers that make their convs when they are built (the RPN head, the
  ResNet's basic residual blocks, the ASPP head) pass the scope on to them
  when built inside it, as factory.build_models does; the bottleneck block
  keeps its own mode and host for its convs.

  Args:
    mode: 'auto' or 'off'.
    machine: the host 'auto' decides for; None: this one. Tests describe
      other hosts with it.

  Raises:
    ValueError: `mode` is none of MODES.
  """
  check(mode)
  _scopes.append((mode, machine))
  try:
    yield
  finally:
    _scopes.pop()


def current_mode() -> str:
  """The innermost scope's mode; 'auto' outside any scope."""
  return _scopes[-1][0] if _scopes else AUTO


def current_host() -> host_lib.Host | None:
  """The host the innermost scope decides for; None: this one. A layer
  that makes sublayers when it builds, after its scope may be gone, keeps
  it to make them in a scope of its own mode and host."""
  return _scopes[-1][1] if _scopes else None


def for_layer(mode: str | None) -> tuple[str, Rewrites]:
  """(mode, rewrites) of a layer made now and given `mode` (None: the
  innermost scope's), decided for the scope's host."""
  scope_mode, machine = _scopes[-1] if _scopes else (AUTO, None)
  mode = scope_mode if mode is None else mode
  return mode, resolve(mode, machine)
