"""TensorBoard pictures of the model's current predictions while it trains.

They go through the same pasting as served masks (postprocess/masks.py), at
the model-input pixels of the first batch seen, so a picture shows what
the model would return for it.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from masklab_tf import visualize
from masklab_tf.postprocess import image_results
from masklab_tf.postprocess import masks as masks_lib
from masklab_tf.training import hooks


def prediction_pictures(inference_call, batch: dict, num_classes: int,
                        max_images: int = 2) -> np.ndarray:
  """uint8 [N, H, 2W + 2, 3]: masks and boxes on the batch's first images,
  beside their semantic maps.

  Args:
    inference_call: a function of {'image', 'image_size'} returning the
      inference graph's outputs (modeling/systems/base.py).
    batch: a pipeline batch.
    num_classes: K, for the semantic map's colours.
    max_images: pictures drawn.
  """
  images = batch['image'][:max_images]
  outputs = inference_call({'image': images,
                            'image_size': batch['image_size'][:max_images]})
  outputs = {k: v.numpy() for k, v in outputs.items()}
  pictures = []
  for i, image in enumerate(images.numpy()):
    height, width = image.shape[:2]
    # A pretraining stage (semantic_segmentation) has its map alone.
    num = int(outputs['num_detections'][i]) if 'num_detections' in outputs \
        else 0
    boxes = outputs['detection_boxes'][i, :num] if num else np.zeros([0, 4])
    masks = (masks_lib.paste_masks(outputs['detection_masks'][i, :num],
                                   boxes, height, width).numpy()
             if num else np.zeros([0, height, width]))
    pictures.append(visualize.prediction_panel(
        image, boxes, masks >= image_results.MASK_THRESHOLD,
        outputs['semantic_map'][i] if 'semantic_map' in outputs else None,
        num_classes))
  return np.stack(pictures)


class PredictionPictures(hooks.Hook):
  """Every `every` steps, the predictions on the first batch seen, as the
  TensorBoard image summary 'predictions' (the chief only)."""

  def __init__(self, every: int, max_images: int = 2):
    """Args: every: steps between pictures; max_images: pictures drawn."""
    self.every = every
    self.max_images = max_images
    self._batch = None

  def after_step(self, trainer, step, losses, batch):
    del losses
    if self._batch is None:
      self._batch = batch
    if step % self.every or not trainer.is_chief:
      return
    pictures = prediction_pictures(
        trainer.predict, self._batch, trainer.configs.model.num_classes,
        self.max_images)
    with trainer.summary_writer.as_default(step=step):
      tf.summary.image('predictions', pictures, max_outputs=4)
