"""Pictures a person can look at: label maps, direction maps, instance masks.

numpy + Pillow only, so the same code draws training targets, predictions
and TensorBoard images. Box lines and label text scale with the image: a
fixed 11 px label covered a third of a 160 px shapes image, and a 1 px box
vanishes when a 4000 px photo is shown on a screen.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from masklab_tf.ops import label_values

_IGNORE_COLOR = (255, 255, 255)


def palette(num_colors: int, seed: int = 3) -> np.ndarray:
  """Distinct, stable colours: uint8 [num_colors, 3]; colour 0 is black."""
  rng = np.random.default_rng(seed)
  hues = (np.arange(num_colors) * 0.618034 + rng.uniform()) % 1.0
  colors = [colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]
  colors = (np.array(colors) * 255).astype(np.uint8)
  colors[0] = 0
  return colors


def color_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Semantic label map [H, W] -> uint8 [H, W, 3]; ignore is white."""
  colors = palette(max(num_classes, 1) + 1)
  out = colors[np.minimum(labels, len(colors) - 1)]
  out[labels == label_values.IGNORE_LABEL] = _IGNORE_COLOR
  return out


def color_directions(labels: np.ndarray, num_directions: int = 8,
                     num_distance_bins: int = 4) -> np.ndarray:
  """Direction map [H, W] -> uint8 [H, W, 3]: hue = direction, value = ring.

  Inner rings are dark, outer ones bright, so each instance shows as a
  colour wheel around its box centre (MaskLab Fig. 3); ignore is white.
  """
  labels = labels.astype(np.int64)
  valid = labels != label_values.IGNORE_LABEL
  direction, distance = np.divmod(np.where(valid, labels, 0),
                                  num_distance_bins)
  out = np.zeros(labels.shape + (3,), np.uint8)
  for d in range(num_directions):
    for r in range(num_distance_bins):
      rgb = colorsys.hsv_to_rgb(d / num_directions, 0.9,
                                0.35 + 0.65 * (r + 1) / num_distance_bins)
      out[valid & (direction == d) & (distance == r)] = np.array(rgb) * 255
  out[~valid] = _IGNORE_COLOR
  return out


def line_width(height: int, width: int) -> int:
  """Box outline width (px): about 1/300 of the shorter side, at least 1
  (1 px below 450 px), so that boxes stay visible on a shrunk photo."""
  return max(1, round(min(height, width) / 300))


def label_font_size(height: int, width: int) -> int:
  """Label text size (px): about 1/24 of the shorter side, at least 7 (the
  smallest still readable), so that a label covers a similar share of a
  small and of a large image."""
  return max(7, round(min(height, width) / 24))


def overlay_masks(image: np.ndarray, masks: np.ndarray, boxes=None,
                  alpha: float = 0.5, width: int | None = None
                  ) -> np.ndarray:
  """Instance masks [N, H, W] and boxes [N, 4] (ymin, xmin, ymax, xmax);
  box lines `width` px wide (default: `line_width` of the image)."""
  if width is None:
    width = line_width(*image.shape[:2])
  out = image.astype(np.float32).copy()
  count = max(len(masks), 0 if boxes is None else len(boxes))
  colors = palette(count + 1)[1:].astype(np.float32)
  for mask, color in zip(masks, colors):
    on = mask > 0
    out[on] = (1 - alpha) * out[on] + alpha * color
  out = out.astype(np.uint8)
  if boxes is not None:
    for box, color in zip(boxes, colors.astype(np.uint8)):
      _draw_box(out, box, color, width)
  return out


def _draw_box(image, box, color, width=1):
  """The box's outline, `width` px drawn inwards from its edges."""
  height, image_width = image.shape[:2]
  ymin, xmin, ymax, xmax = np.round(box).astype(int)
  ymin, ymax = np.clip([ymin, ymax - 1], 0, height - 1)
  xmin, xmax = np.clip([xmin, xmax - 1], 0, image_width - 1)
  w = max(1, min(width, (ymax - ymin + 2) // 2, (xmax - xmin + 2) // 2))
  image[ymin:ymin + w, xmin:xmax + 1] = color
  image[ymax - w + 1:ymax + 1, xmin:xmax + 1] = color
  image[ymin:ymax + 1, xmin:xmin + w] = color
  image[ymin:ymax + 1, xmax - w + 1:xmax + 1] = color


def label_font(size: int) -> ImageFont.ImageFont:
  """Pillow's built-in font at `size` px (its fixed-size bitmap font
  where Pillow was built without FreeType)."""
  try:
    return ImageFont.load_default(size=size)
  except (ImportError, OSError, TypeError, ValueError):
    return ImageFont.load_default()


def draw_labels(image: np.ndarray, boxes: np.ndarray, labels: list[str],
                colors: np.ndarray | None = None) -> np.ndarray:
  """Each box's label on a tag of its colour, above the box (inside its top
  edge when the box touches the image's top), text sized to the image
  (`label_font_size`).

  Args:
    image: uint8 [H, W, 3].
    boxes: [N, 4] (ymin, xmin, ymax, xmax) in the image's pixels.
    labels: N strings.
    colors: uint8 [N, 3]; default: overlay_masks' colours, so that a label
      matches its box and mask.

  Returns:
    uint8 [H, W, 3]: a copy with the labels drawn.
  """
  picture = Image.fromarray(image)
  draw = ImageDraw.Draw(picture)
  font = label_font(label_font_size(*image.shape[:2]))
  if colors is None:
    colors = palette(len(boxes) + 1)[1:]
  for box, label, color in zip(boxes, labels, colors):
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    text_w, text_h = right - left + 2, bottom - top + 2
    ymin, xmin = float(box[0]), float(box[1])
    y = ymin - text_h if ymin - text_h >= 0 else ymin
    x = min(max(xmin, 0), max(picture.width - text_w, 0))
    draw.rectangle([x, y, x + text_w - 1, y + text_h - 1],
                   fill=tuple(int(c) for c in color))
    draw.text((x + 1 - left, y + 1 - top), label, fill=(0, 0, 0), font=font)
  return np.asarray(picture)


def save_row(path: str, panels: list[np.ndarray], scale: int = 1) -> None:
  """Saves panels [H, W, 3] side by side (padded to one height) as PNG."""
  height = max(p.shape[0] for p in panels)
  padded = [np.pad(p, [[0, height - p.shape[0]], [0, 2], [0, 0]],
                   constant_values=128) for p in panels]
  row = np.concatenate(padded, axis=1)
  if scale > 1:
    row = row.repeat(scale, axis=0).repeat(scale, axis=1)
  Image.fromarray(row).save(path)


def prediction_panel(image: np.ndarray, boxes: np.ndarray,
                     masks: np.ndarray, semantic_map: np.ndarray | None,
                     num_classes: int) -> np.ndarray:
  """One image's predictions side by side: masks + boxes | semantic map.

  Args:
    image: uint8 [H, W, 3].
    boxes: [N, 4] (ymin, xmin, ymax, xmax) in the image's pixels.
    masks: [N, H, W] binary, pasted into the image.
    semantic_map: int [H, W] class map, or None.
    num_classes: K, for the semantic map's colours.

  Returns:
    uint8 [H, 2 W + 2, 3] (or the first panel alone without a map).
  """
  panels = [overlay_masks(image, masks, boxes)]
  if semantic_map is not None:
    panels.append(color_labels(semantic_map, num_classes))
  panels = [np.pad(p, [[0, 0], [0, 2], [0, 0]], constant_values=128)
            for p in panels]
  return np.concatenate(panels, axis=1)[:, :-2]


def panoptic_png(category_map: np.ndarray,
                 instance_map: np.ndarray) -> np.ndarray:
  """Fusion maps -> an RGB image to save as PNG.

  R = category (class) id, G = instance id // 256, B = instance id % 256,
  so a PNG holds both maps losslessly for up to 255 classes and 65535
  instances (COCO-panoptic's single id, category * 1000 + instance, would
  not fit in 8 bits per channel without the same split).

  Args:
    category_map: int [H, W] in 0..255.
    instance_map: int [H, W] in 0..65535.

  Returns:
    uint8 [H, W, 3].
  """
  category_map = np.asarray(category_map)
  instance_map = np.asarray(instance_map)
  if category_map.min(initial=0) < 0 or category_map.max(initial=0) > 255:
    raise ValueError('categories must be in 0..255')
  if instance_map.min(initial=0) < 0 or instance_map.max(initial=0) > 65535:
    raise ValueError('instance ids must be in 0..65535')
  return np.stack([category_map, instance_map >> 8, instance_map & 255],
                  axis=-1).astype(np.uint8)
