"""The contract between a system of the paper family and the common tools.

A system (MaskLab and its ablations, FCIS, BiSeg, InstanceFCN, and the
semantic-segmentation pretraining stage) is what the
trainer, the evaluator and serving hold without knowing which one it is.
It builds two functional graphs over shared layers:

- a training graph whose outputs `compute_losses` reads;
- an inference graph taking (image, image_size) and returning detections
  in model-input pixels: num_detections [B], detection_boxes [B, D, 4],
  detection_classes [B, D], detection_scores [B, D], detection_masks
  [B, D, S, S] box-relative probabilities, and, where the system has one,
  semantic_logits and semantic_map. postprocess/ takes them to image pixels.
  A pretraining stage (`has_detections` False) returns the semantic
  outputs alone.

Images enter as uint8 (or float 0..255) [B, H, W, 3], padded to a multiple
of the output stride; `image_size` [B, 2] is the valid (unpadded) size.
Systems are listed by name in modeling/systems/registry.py.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib

INFERENCE_INPUTS = ('image', 'image_size')
DETECTION_OUTPUTS = ('num_detections', 'detection_boxes',
                     'detection_classes', 'detection_scores',
                     'detection_masks')
SEMANTIC_OUTPUTS = ('semantic_logits', 'semantic_map')


class Models(NamedTuple):
  """A system's models; every layer is shared between the two graphs.

  Attributes:
    train_model: inputs system.train_inputs -> what compute_losses reads.
    inference_model: (image, image_size) -> system.inference_outputs.
    backbone: the ResNet inside both (ImageNet weights load into it).
    system: the System that built them.
  """
  train_model: tf_keras.Model
  inference_model: tf_keras.Model
  backbone: tf_keras.Model
  system: 'System'


class System(abc.ABC):
  """A model family behind one interface (see the module docstring).

  Subclasses set the class attributes and implement `build` and
  `compute_losses`; their constructor reads the config and rejects settings
  the system cannot honour, before anything is built.

  Attributes:
    name: the registry name (--mask_head).
    class_agnostic: the detections are class-agnostic segment proposals
      (evaluated by average recall) rather than class-labelled detections
      (COCO AP).
    needs_full_masks: training reads full-image instance masks (gt_masks),
      which the input pipeline then emits.
    train_inputs: the batch entries the training graph takes.
    inference_outputs: the keys of the inference graph's outputs.
    checkpoint_aliases: {prefix of this system's weight names: the prefix
      the same weights have in the systems it initialises}, for
      --init_checkpoint (modeling/checkpoints.py); most systems name their
      weights as the others do and need none.
  """

  class_agnostic: bool = False
  needs_full_masks: bool = False
  train_inputs: tuple[str, ...] = ()
  inference_outputs: tuple[str, ...] = DETECTION_OUTPUTS
  checkpoint_aliases: dict[str, str] = {}

  def __init__(self, name: str, cfg: config_lib.ModelConfig,
               geometry: config_lib.GeometryConfig | None = None):
    """Args: name: the registry name; cfg: the model config; geometry: the
    direction geometry and mask crop size (default GeometryConfig())."""
    self.name = name
    self.cfg = cfg
    self.geometry = geometry or config_lib.GeometryConfig()

  @property
  def has_semantic_map(self) -> bool:
    return 'semantic_map' in self.inference_outputs

  @property
  def has_detections(self) -> bool:
    """False for a pretraining stage (semantic_segmentation), whose
    graph returns the semantic map alone: it is scored by mean IoU and
    neither exported nor served."""
    return 'detection_boxes' in self.inference_outputs

  @abc.abstractmethod
  def build(self, max_instances: int = 100,
            image_shape: tuple = (None, None),
            use_xla: bool = True, gather_crops: bool = False,
            portable: bool = False) -> Models:
    """The system's models.

    Args:
      max_instances: ground-truth slots per image (DataConfig).
      image_shape: static (height, width) of the padded images, or Nones.
      use_xla: compile the assembling layer's core with XLA.
      gather_crops: RoI crops gather their samples instead of calling
        crop_and_resize (roi_crop.crop_rois: deterministic runs on a GPU).
      portable: the inference graph in ops ONNX can express, for the ONNX
        export (postprocess/detections.py's portable NMS); same results.
    """

  @abc.abstractmethod
  def compute_losses(self, outputs: dict, batch: dict) -> dict[str, tf.Tensor]:
    """All losses of one replica's batch; 'total' is their sum.

    Args:
      outputs: train_model's outputs.
      batch: the input pipeline's batch (data/pipeline.py).
    """

  def model_inputs(self, batch: dict, training: bool) -> dict:
    """The batch entries the training or inference graph takes."""
    keys = self.train_inputs if training else INFERENCE_INPUTS
    missing = [k for k in keys if k not in batch]
    if missing:
      hint = (' (the pipeline emits gt_masks with keep_full_masks, which '
              'the trainer turns on for systems that need them)'
              if 'gt_masks' in missing else '')
      raise KeyError(f'the {self.name} system needs batch entries '
                     f'{", ".join(missing)}, which this batch lacks{hint}')
    return {k: batch[k] for k in keys}
