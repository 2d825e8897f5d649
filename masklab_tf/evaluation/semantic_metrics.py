"""Mean IoU of a semantic map against the pipeline's semantic labels.

The score of the semantic-segmentation pretraining stage (a model that
returns no detections), and of any system's semantic map in the benchmarks.
Counted at the model's input resolution, where the pipeline's labels are:
each image's pixels once, its padding (label 255) never.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from masklab_tf.ops import label_values


def confusion(predicted: np.ndarray, labels: np.ndarray,
              num_classes: int) -> np.ndarray:
  """int64 [K+1, K+1] pixel counts by (true class, predicted class).

  Args:
    predicted: int [...] classes 0..K (values above K count as K).
    labels: int [...] 0..K, IGNORE_LABEL (255) not counted.
    num_classes: K.
  """
  k = num_classes
  valid = labels != label_values.IGNORE_LABEL
  return np.bincount(
      labels[valid].astype(np.int64) * (k + 1) + np.clip(
          predicted[valid], 0, k), minlength=(k + 1) ** 2).reshape(k + 1,
                                                                   k + 1)


def intersection_over_union(counts: np.ndarray) -> np.ndarray:
  """float64 [K+1] IoU in % per class of a confusion matrix; NaN for a
  class neither labelled nor predicted."""
  hits = np.diag(counts).astype(np.float64)
  union = counts.sum(0) + counts.sum(1) - hits
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(union > 0, hits / union * 100, np.nan)


def mean_iou(counts: np.ndarray) -> float:
  """Mean over the classes present (labelled or predicted), in %."""
  return float(np.nanmean(intersection_over_union(counts)))


def semantic_metrics(inference_model, batches: tf.data.Dataset,
                     num_classes: int,
                     class_names: list[str] | None = None) -> dict:
  """{'mIoU', 'IoU': {class name: IoU}} of `inference_model`'s semantic
  map over eval batches (background included, as DeepLab counts it).

  Args:
    inference_model: (image, image_size) -> {'semantic_map' [B, H, W], ...}.
    batches: the eval pipeline's batches (data/pipeline.py).
    num_classes: K.
    class_names: the K object classes' names (default: their indices).
  """
  call = tf.function(lambda inputs: inference_model(inputs, training=False),
                     autograph=False)
  counts = np.zeros([num_classes + 1] * 2, np.int64)
  for batch in batches:
    semantic = call({'image': batch['image'],
                     'image_size': batch['image_size']})['semantic_map']
    counts += confusion(semantic.numpy(), batch['semantic_labels'].numpy(),
                        num_classes)
  names = ['background'] + list(class_names or range(1, num_classes + 1))
  return {'mIoU': mean_iou(counts),
          'IoU': {str(name): None if np.isnan(iou) else float(iou)
                  for name, iou in zip(names,
                                       intersection_over_union(counts))}}
