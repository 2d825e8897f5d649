"""SavedModel export for TF Serving: any batch, any image size.

Two signatures over the same variables:
  serving_default  images: uint8 [B, H, W, 3] (B, H, W dynamic; one size
                   per request, as a tensor must be)
  serving_encoded  encoded: string [B] JPEG, PNG, GIF, BMP or WebP bytes,
                   each its own size (what REST clients send, base64 in
                   the JSON)
Both resize and pad in the graph to the model's input policy and return the
outputs of serving/model.py in each image's own pixels. Images over
`max_image_pixels` (default 40 megapixels) are refused, encoded ones from
their headers before decoding. Each encoded image runs the network at
its own size, so its results are those it gets alone, whatever shares
its batch (image_results.EachImageAlone). Bad requests fail with errors
that say what is wrong and, for encoded images, which element of the batch
(rank, channels, size, format, an undecodable image): TF Serving's clients
see only the message. An empty batch gets empty outputs. The SavedModel
is plain TensorFlow: loading it needs neither masklab_tf nor Model
Garden. The class names travel as an asset (assets/categories.json).
"""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf
import tf_keras

from masklab_tf import config as config_lib
from masklab_tf import files
from masklab_tf.postprocess import image_results
from masklab_tf.serving import model as model_lib
from masklab_tf.serving import preprocess


class ServingModule(tf.Module):
  """The serving model (serving/model.py) behind the two signatures."""

  def __init__(self, serving_model: tf_keras.Model,
               categories_path: str | None = None,
               max_image_pixels: int = preprocess.MAX_IMAGE_PIXELS):
    """Args: serving_model: from model_lib.build_serving_model;
    categories_path: a categories.json to carry as an asset;
    max_image_pixels: larger images (height x width) are refused, read
    from their headers before decoding (preprocess.decode_images)."""
    super().__init__(name='masklab_serving')
    if max_image_pixels < 1:
      raise ValueError(f'max_image_pixels must be >= 1, got '
                       f'{max_image_pixels}')
    self.max_image_pixels = int(max_image_pixels)
    self.serving_model = serving_model
    resize_and_pad = serving_model.get_layer(model_lib.RESIZE_AND_PAD)
    # Encoded images of different sizes share a batch: each runs alone, so
    # that its results do not depend on its companions (image_results.
    # EachImageAlone); with a fixed pad_to every image is padded alike.
    self.detect = image_results.each_image_alone(
        serving_model.get_layer(model_lib.DETECT),
        0 if resize_and_pad.pad_to else resize_and_pad.stride)
    # The encoded path decodes each image to its own size, then follows
    # the policy the serving model's ResizeAndPad holds.
    self._policy = dict(min_size=resize_and_pad.min_size,
                        max_size=resize_and_pad.max_size,
                        stride=resize_and_pad.stride,
                        pad_to=resize_and_pad.pad_to)
    if categories_path:
      self.categories = tf.saved_model.Asset(categories_path)

  def _detect(self, images, size, scale, original):
    return self.detect({'image': images, 'image_size': size, 'scale': scale,
                        'original_size': original}, training=False)

  def _empty_safe(self, batch, run, placeholder):
    """An empty request gets empty outputs: run one placeholder input (the
    network cannot run on 0 images) and keep the first `batch` rows."""
    inputs = tf.cond(batch > 0, lambda: run[1], lambda: placeholder)
    outputs = run[0](inputs)
    return {k: v[:batch] for k, v in outputs.items()}

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.uint8, name='images')])
  def serve_images(self, images):
    # Signatures do not enforce the spec's shape: say what is wrong
    # instead of failing deep inside the network.
    images = preprocess.check_images(images, self.max_image_pixels)
    return self._empty_safe(
        tf.shape(images)[0],
        (lambda x: self.serving_model(x, training=False), images),
        tf.zeros([1, 1, 1, 3], tf.uint8))

  @tf.function(input_signature=[
      tf.TensorSpec([None], tf.string, name='encoded')])
  def serve_encoded(self, encoded):
    encoded = preprocess.check_encoded(encoded)
    return self._empty_safe(
        tf.shape(encoded)[0],
        (lambda x: self._detect(*preprocess.decode_images(
            x, **self._policy, max_pixels=self.max_image_pixels)), encoded),
        self._placeholder_png())

  @staticmethod
  def _placeholder_png():
    return tf.expand_dims(tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8)), 0)


def write_categories(categories: list[dict], directory: str) -> str:
  """categories.json for the asset (or beside model.onnx): [{id, name},
  ...] in class order, written atomically."""
  path = os.path.join(directory, 'categories.json')
  files.write_json(path, [{'id': c['id'], 'name': c['name']}
                          for c in categories])
  return path


def export_saved_model(inference_model: tf_keras.Model,
                       configs: config_lib.Configs, export_dir: str,
                       categories: list[dict] | None = None,
                       full_image_masks: bool = False,
                       mask_voting: bool = False,
                       panoptic: bool = False,
                       max_image_pixels: int = preprocess.MAX_IMAGE_PIXELS
                       ) -> str:
  """Writes the SavedModel; returns export_dir.

  Args:
    inference_model: Models.inference_model (modeling/systems/base.py) with
      trained weights.
    configs: the model's configs (input policy, stride).
    export_dir: output folder (a TF Serving version folder, e.g. .../1).
    categories: COCO categories [{id, name}] in class order (optional).
    full_image_masks: add `detection_masks_full` to both signatures.
    mask_voting: binarise those masks by mask voting (adds them).
    panoptic: add the output fusion's panoptic_category_map and
      panoptic_instance_map.
    max_image_pixels: both signatures refuse a larger image (height x
      width), naming it; the encoded one reads the size from the image's
      header, so a decompression bomb is never decoded.
  """
  with tempfile.TemporaryDirectory() as scratch:
    categories_path = (write_categories(categories, scratch)
                       if categories else None)
    module = ServingModule(
        model_lib.build_serving_model(inference_model, configs,
                                      full_image_masks, mask_voting,
                                      panoptic), categories_path,
        max_image_pixels)
    signatures = {
        'serving_default': module.serve_images.get_concrete_function(),
        'serving_encoded': module.serve_encoded.get_concrete_function(),
    }
    tf.saved_model.save(module, export_dir, signatures=signatures)
  return export_dir
