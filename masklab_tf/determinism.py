"""Repeatable runs: what `--deterministic` (TrainConfig.deterministic) sets.

With it, the same seed on the same machine gives bit-identical losses at
every step and bit-identical weights at the end, on one device and under
`mirrored`, and a run resumed from a checkpoint ends as an uninterrupted one
does (tests/training/test_determinism.py; docs/reproducibility.md has the
cost and the spread without it). Each source of run-to-run difference and
what removes it, as measured on TF 2.20 / CPU (same batch, same weights, two
processes, gradients compared bit for bit):

- TensorFlow's kernels: `tf.config.experimental.enable_op_determinism`
  (without it the backbone's gradients still differed in the last bits).
- Grappler: with its meta-optimizer on, the gradients of the backbone,
  where the heads' gradients are summed, differed in the last bits between
  processes, even single-threaded and with every pass that
  `tf.config.optimizer.set_experimental_options` names turned off (in
  groups, then all at once); with the meta-optimizer off they repeat. It is
  turned off.
- XLA: the jit-compiled assembling layer's gradient (a scatter-add of its
  gather's) differed between processes; the plain-TF path, the same
  arithmetic, repeats. A deterministic run trains with it (`use_xla`
  below); inference keeps XLA, whose forward gather repeats.
- Random draws: weights are initialised after `tf_keras.utils.set_random_seed`
  (the trainer, always); the samplers draw from generators that checkpoints
  carry (modeling/layers/sampler_base.py); augmentation is stateless from
  (seed, position in the example stream), and the input pipeline keeps its
  order and, resumed, skips to the checkpoint's position (data/pipeline.py).
"""

from __future__ import annotations

import tensorflow as tf

from masklab_tf import host as host_lib


def enable() -> None:
  """Makes this process's TensorFlow computations repeatable (see above).

  Process-wide and for good: TensorFlow has no switch back. Call it before
  the first tf.function is traced; functions traced earlier keep Grappler's
  rewrites.
  """
  tf.config.experimental.enable_op_determinism()
  tf.config.optimizer.set_experimental_options(
      {'disable_meta_optimizer': True})


def gather_crops(deterministic: bool,
                 machine: host_lib.Host | None = None) -> bool:
  """Whether a model's RoI crops gather their samples instead of calling
  tf.image.crop_and_resize: for deterministic runs on a host with a GPU.
  CropAndResize's image gradient has no deterministic GPU kernel and raises
  under op determinism (TensorFlow issue 42033, PR 48905); a gather's
  gradient has one. On the CPU both are deterministic and crop_and_resize
  stays (untested on a GPU: docs/gpu.md).

  Args:
    deterministic: TrainConfig.deterministic.
    machine: the host; None: this one (host_lib.current()).
  """
  if not deterministic:
    return False
  machine = host_lib.current() if machine is None else machine
  return bool(machine.gpus)


def use_xla(deterministic: bool) -> bool:
  """Whether a run trains its assembling layers compiled with XLA."""
  return not deterministic
