"""Synthetic "shapes" instance-segmentation dataset written in COCO format.

Every class differs in both outline and fill texture (circle/solid,
square/stripes, triangle/checker, cross/dots), so a small CNN can learn the
classes quickly.  In the default *hard* mode, instances of the same class are
placed in touching or overlapping clusters: semantic segmentation alone
cannot split them, which is exactly what MaskLab's direction features are for.
``easy=True`` keeps instances apart for smoke tests.

Only numpy, Pillow, pycocotools and scikit-image are used (no TensorFlow), so
the generator runs anywhere the data tooling runs.

Why one file of this length: drawing, layout (touching clusters) and the
COCO writer are small steps of one generator whose seed fixes every image;
kept together, one read shows what an image can contain.
"""

import colorsys
import dataclasses
import json
import os
import zlib

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
import skimage.data
import skimage.draw

CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
    {"id": 4, "name": "cross", "supercategory": "shape"},
]

MIN_INSTANCES = 3
MAX_INSTANCES = 8
MIN_EXTENT = 18
MAX_EXTENT = 60
MIN_VISIBLE_PIXELS = 40
MIN_VISIBLE_FRACTION = 0.3
EASY_MARGIN = 4

# Hard-mode placement odds: the second instance is usually a same-class
# neighbour of the first so most images hold at least one touching pair.
P_SECOND_IS_SIBLING = 0.9
P_SIBLING = 0.4
P_OTHER_CLASS_NEIGHBOUR = 0.15
P_TOUCH_ONLY = 0.5

# Images shipped inside the scikit-image wheel (no download needed).
BACKGROUND_SOURCES = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry",
    "brick", "grass", "gravel", "camera", "coins", "moon",
)
_BACKGROUND_CACHE = {}


@dataclasses.dataclass
class _Instance:
  """One drawn shape: its full (unoccluded) mask patch and where it sits."""
  class_id: int
  patch: np.ndarray  # bool [h, w], tight around the shape
  top: int
  left: int
  color: np.ndarray  # float [3], 0..255
  hue: float
  phase: tuple

  @property
  def slices(self):
    h, w = self.patch.shape
    return slice(self.top, self.top + h), slice(self.left, self.left + w)

  @property
  def center(self):
    h, w = self.patch.shape
    return self.top + (h - 1) / 2, self.left + (w - 1) / 2


# ---------------------------------------------------------------- backgrounds


def _background_sources():
  """Loads the offline skimage sample images once, as RGB uint8."""
  if not _BACKGROUND_CACHE:
    for name in BACKGROUND_SOURCES:
      try:
        image = np.asarray(getattr(skimage.data, name)())
      except Exception:  # missing from this skimage build or needs download
        continue
      if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
      _BACKGROUND_CACHE[name] = image[..., :3].astype(np.uint8)
  return [_BACKGROUND_CACHE[name] for name in sorted(_BACKGROUND_CACHE)]


def _noise_background(rng, image_size):
  """Fallback texture for a scikit-image build without its sample images."""
  coarse = rng.uniform(0, 255, size=(8, 8, 3)).astype(np.uint8)
  smooth = Image.fromarray(coarse).resize((image_size, image_size),
                                          Image.BICUBIC)
  grain = rng.normal(0, 12, size=(image_size, image_size, 3))
  return np.clip(np.asarray(smooth, np.float32) + grain, 0, 255)


def _sample_background(rng, image_size):
  """A random crop of a natural image, desaturated and dimmed.

  Real texture keeps the task from being trivially "anything non-black is a
  shape"; dimming keeps the saturated shapes clearly in front.
  """
  sources = _background_sources()
  if not sources:
    rgb = _noise_background(rng, image_size)
  else:
    source = sources[rng.integers(len(sources))]
    h, w = source.shape[:2]
    crop = int(rng.uniform(0.35, 1.0) * min(h, w))
    top, left = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
    patch = Image.fromarray(source[top:top + crop, left:left + crop])
    rgb = np.asarray(patch.resize((image_size, image_size), Image.BILINEAR),
                     np.float32)
    if rng.random() < 0.5:
      rgb = rgb[:, ::-1]
  gray = rgb.mean(axis=-1, keepdims=True)
  return 0.55 * (0.5 * rgb + 0.5 * gray) + 15.0


# --------------------------------------------------------------------- shapes


def _polygon_patch(vertices, extent):
  """Rasterizes unit-scale vertices scaled so the bounding extent is ~extent."""
  vertices = vertices - vertices.min(axis=0)
  vertices = vertices * ((extent - 1) / vertices.max())
  rows = int(np.ceil(vertices[:, 0].max())) + 1
  cols = int(np.ceil(vertices[:, 1].max())) + 1
  patch = np.zeros((rows, cols), bool)
  rr, cc = skimage.draw.polygon(vertices[:, 0], vertices[:, 1], (rows, cols))
  patch[rr, cc] = True
  return patch


def _rotate(points, angle):
  cos, sin = np.cos(angle), np.sin(angle)
  return points @ np.array([[cos, -sin], [sin, cos]])


def _regular_polygon(num_vertices):
  angles = np.arange(num_vertices) * (2 * np.pi / num_vertices)
  return np.stack([np.sin(angles), np.cos(angles)], axis=-1)


def _cross_outline():
  arm = 1.0 / 3.0
  a, b = arm / 2, 0.5
  return np.array([(-b, -a), (-b, a), (-a, a), (-a, b), (a, b), (a, a),
                   (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a)])


def _circle_patch(extent):
  yy, xx = np.indices((extent, extent))
  center = (extent - 1) / 2
  return (yy - center) ** 2 + (xx - center) ** 2 <= (extent / 2) ** 2


def _shape_patch(class_id, extent, angle):
  """Full mask of one shape, cropped to its tight box."""
  if class_id == 1:
    patch = _circle_patch(extent)
  else:
    outline = {2: lambda: _regular_polygon(4),
               3: lambda: _regular_polygon(3),
               4: _cross_outline}[class_id]()
    patch = _polygon_patch(_rotate(outline, angle), extent)
  rows, cols = np.flatnonzero(patch.any(1)), np.flatnonzero(patch.any(0))
  return patch[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _sample_patch(rng, class_id, max_extent=MAX_EXTENT):
  """A shape whose bounding extent lies in [MIN_EXTENT, max_extent]."""
  while True:
    extent = int(rng.integers(MIN_EXTENT, max_extent + 1))
    patch = _shape_patch(class_id, extent, rng.uniform(0, 2 * np.pi))
    if MIN_EXTENT <= max(patch.shape) <= max_extent:
      return patch


# ------------------------------------------------------------------- textures


def _texture_mask(class_id, shape, phase):
  """Where the secondary colour goes; the pattern is what identifies a class."""
  yy, xx = np.indices(shape)
  yy, xx = yy + phase[0], xx + phase[1]
  if class_id == 1:  # solid
    return np.zeros(shape, bool)
  if class_id == 2:  # horizontal stripes, period 6
    return (yy // 3) % 2 == 1
  if class_id == 3:  # checkerboard, 4 px cells
    return ((yy // 4) + (xx // 4)) % 2 == 1
  # dots on a 6 px grid
  return ((yy % 6) - 2.5) ** 2 + ((xx % 6) - 2.5) ** 2 <= 2.6


def _sample_color(rng, avoid_hue=None):
  """A saturated colour; neighbours of one class get clearly different hues."""
  hue = rng.random()
  if avoid_hue is not None:
    hue = (avoid_hue + rng.uniform(0.2, 0.8)) % 1.0
  rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.8, 1.0))
  return np.array(rgb) * 255.0, hue


def _new_instance(rng, class_id, max_extent=MAX_EXTENT, avoid_hue=None):
  color, hue = _sample_color(rng, avoid_hue)
  phase = tuple(int(p) for p in rng.integers(0, 12, size=2))
  return _Instance(class_id, _sample_patch(rng, class_id, max_extent), 0, 0,
                   color, hue, phase)


# ------------------------------------------------------------------ placement


def _dilate(mask, radius):
  """Square (8-neighbour) dilation that grows the array by radius per side."""
  grown = np.pad(mask, radius)
  out = grown.copy()
  for shift in range(1, radius + 1):
    out[shift:] |= grown[:-shift]
    out[:-shift] |= grown[shift:]
  rows = out.copy()
  for shift in range(1, radius + 1):
    out[:, shift:] |= rows[:, :-shift]
    out[:, :-shift] |= rows[:, shift:]
  return out


def _fits(patch, top, left, image_size):
  h, w = patch.shape
  return 0 <= top <= image_size - h and 0 <= left <= image_size - w


def _hits(occupied, patch, top, left):
  """Whether patch at (top, left) overlaps occupied (off-canvas: ignored)."""
  h, w = patch.shape
  size_y, size_x = occupied.shape
  y0, x0 = max(top, 0), max(left, 0)
  y1, x1 = min(top + h, size_y), min(left + w, size_x)
  if y0 >= y1 or x0 >= x1:
    return False
  local = patch[y0 - top:y1 - top, x0 - left:x1 - left]
  return bool((occupied[y0:y1, x0:x1] & local).any())


def _place_free(rng, instance, occupied, margin, allow_overlap, tries=40):
  """Puts the instance at a random spot, clear of others if it can."""
  image_size = occupied.shape[0]
  keepout = _dilate(instance.patch, margin) if margin else instance.patch
  h, w = instance.patch.shape
  for _ in range(tries):
    top = int(rng.integers(0, image_size - h + 1))
    left = int(rng.integers(0, image_size - w + 1))
    if not _hits(occupied, keepout, top - margin, left - margin):
      instance.top, instance.left = top, left
      return True
  if allow_overlap:
    instance.top, instance.left = top, left
    return True
  return False


def _place_next_to(rng, instance, anchor, overlap_px, image_size, tries=8):
  """Slides the instance out of the anchor along a random direction.

  It is moved one pixel at a time from the anchor's centre until it stops
  overlapping the anchor; each step moves it at most one pixel per axis, so
  the first free position is 8-adjacent to the anchor.  Stepping back by
  overlap_px then gives a partial overlap instead of a touch.
  """
  anchor_mask = np.zeros((image_size, image_size), bool)
  anchor_mask[anchor.slices] = anchor.patch
  h, w = instance.patch.shape
  center_y, center_x = anchor.center
  for _ in range(tries):
    angle = rng.uniform(0, 2 * np.pi)
    step_y, step_x = np.sin(angle), np.cos(angle)
    positions = []
    for distance in range(2 * MAX_EXTENT):
      top = int(round(center_y + distance * step_y - (h - 1) / 2))
      left = int(round(center_x + distance * step_x - (w - 1) / 2))
      positions.append((top, left))
      if not _hits(anchor_mask, instance.patch, top, left):
        break
    top, left = positions[max(len(positions) - 1 - overlap_px, 0)]
    if _fits(instance.patch, top, left, image_size):
      instance.top, instance.left = top, left
      return True
  return False


def _neighbour(rng, instances, num_classes, same_class, image_size):
  """A new instance touching or partly covering a random earlier one."""
  anchor = instances[rng.integers(len(instances))]
  if same_class:
    class_id, avoid_hue = anchor.class_id, anchor.hue
  else:
    others = [c for c in range(1, num_classes + 1) if c != anchor.class_id]
    if not others:
      return None
    class_id, avoid_hue = int(rng.choice(others)), None
  instance = _new_instance(rng, class_id, avoid_hue=avoid_hue)
  overlap_px = 0
  if rng.random() >= P_TOUCH_ONLY:
    overlap_px = int(rng.uniform(0.1, 0.35) * max(instance.patch.shape))
  if _place_next_to(rng, instance, anchor, overlap_px, image_size):
    return instance
  return None


def _layout(rng, image_size, easy, num_classes):
  """Chooses classes, shapes and positions (in drawing order)."""
  target = int(rng.integers(MIN_INSTANCES, MAX_INSTANCES + 1))
  occupied = np.zeros((image_size, image_size), bool)
  instances = []
  for index in range(target):
    instance = None
    if not easy and instances:
      roll = rng.random()
      p_sibling = P_SECOND_IS_SIBLING if index == 1 else P_SIBLING
      if roll < p_sibling + P_OTHER_CLASS_NEIGHBOUR:
        instance = _neighbour(rng, instances, num_classes,
                              roll < p_sibling, image_size)
    if instance is None:
      # Large shapes rarely fit among many others in easy mode; shrink those.
      max_extent = MAX_EXTENT if not easy else int(
          rng.integers(MIN_EXTENT + 10, MAX_EXTENT + 1))
      instance = _new_instance(rng, int(rng.integers(1, num_classes + 1)),
                               max_extent)
      margin = EASY_MARGIN if easy else 0
      if not _place_free(rng, instance, occupied, margin,
                         allow_overlap=not easy):
        continue
    occupied[instance.slices] |= instance.patch
    instances.append(instance)
  return instances


# ------------------------------------------------------------------ rendering


def _label_map(instances, image_size):
  """Index of the topmost instance per pixel (-1: background)."""
  labels = np.full((image_size, image_size), -1, np.int32)
  for index, instance in enumerate(instances):
    labels[instance.slices][instance.patch] = index
  return labels


def _drop_hidden(instances, image_size):
  """Removes mostly-covered instances; removing occluders never hurts others."""
  labels = _label_map(instances, image_size)
  visible = np.bincount(labels.ravel() + 1,
                        minlength=len(instances) + 1)[1:]
  return [instance for instance, pixels in zip(instances, visible)
          if pixels >= MIN_VISIBLE_PIXELS
          and pixels >= MIN_VISIBLE_FRACTION * instance.patch.sum()]


def _paint(background, instances, labels):
  """Paints only visible pixels, so image and masks agree by construction."""
  image = background.copy()
  light = 0.4  # weight of the instance colour in the pale texture colour
  for index, instance in enumerate(instances):
    rows, cols = instance.slices
    visible = labels[rows, cols] == index
    secondary = _texture_mask(instance.class_id, instance.patch.shape,
                              instance.phase)
    pale = light * instance.color + (1 - light) * 255.0
    colors = np.where(secondary[..., None], pale, instance.color)
    image[rows, cols][visible] = colors[visible]
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate_image(rng, image_size=160, easy=False, num_classes=4):
  """Draws one image with 3..8 instances.

  Returns (image uint8 [H, W, 3], list of visible bool masks [H, W], list of
  1-based class ids).  Masks are disjoint: later instances are drawn on top
  and subtract from the masks below them.
  """
  if not 1 <= num_classes <= len(CATEGORIES):
    raise ValueError(f"num_classes must be in 1..{len(CATEGORIES)}")
  if image_size < 2 * MAX_EXTENT:
    raise ValueError(f"image_size must be at least {2 * MAX_EXTENT}")
  background = _sample_background(rng, image_size)
  while True:
    instances = _drop_hidden(_layout(rng, image_size, easy, num_classes),
                             image_size)
    if len(instances) >= MIN_INSTANCES:
      break
  labels = _label_map(instances, image_size)
  image = _paint(background, instances, labels)
  masks = [labels == index for index in range(len(instances))]
  return image, masks, [instance.class_id for instance in instances]


# ---------------------------------------------------------------- COCO output


def touching_same_class_pair(masks, classes):
  """True if two same-class masks overlap or are 8-neighbour adjacent."""
  for i in range(len(masks)):
    grown = None
    for j in range(i + 1, len(masks)):
      if classes[i] != classes[j]:
        continue
      if grown is None:
        grown = _dilate(np.asarray(masks[i], bool), 1)[1:-1, 1:-1]
      if (grown & np.asarray(masks[j], bool)).any():
        return True
  return False


def _encode_annotation(mask, class_id, image_id, annotation_id):
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  x, y = int(cols[0]), int(rows[0])
  return {
      "id": annotation_id,
      "image_id": image_id,
      "category_id": int(class_id),
      "segmentation": {"size": [int(s) for s in rle["size"]],
                       "counts": rle["counts"].decode("ascii")},
      "area": int(mask.sum()),
      "bbox": [x, y, int(cols[-1]) + 1 - x, int(rows[-1]) + 1 - y],
      "iscrowd": 0,
  }


def split_seed(seed, split):
  """Seed of one split, derived from the global seed and the split name."""
  state = np.random.SeedSequence([int(seed), zlib.crc32(split.encode())])
  return int(state.generate_state(1)[0])


def write_split(output_dir, split, num_images, seed, easy=False,
                image_size=160):
  """Writes DIR/split/images/*.png and DIR/split/annotations.json.

  Image i uses its own generator seeded by (seed, i), so any image can be
  regenerated alone and the output does not depend on the number of images.
  Returns the annotations path.
  """
  images_dir = os.path.join(output_dir, split, "images")
  os.makedirs(images_dir, exist_ok=True)
  images, annotations = [], []
  for index in range(num_images):
    rng = np.random.default_rng([int(seed), index])
    image, masks, classes = generate_image(rng, image_size, easy)
    image_id = index + 1
    file_name = f"{image_id:06d}.png"
    Image.fromarray(image).save(os.path.join(images_dir, file_name))
    images.append({"id": image_id, "file_name": file_name,
                   "height": image_size, "width": image_size})
    for mask, class_id in zip(masks, classes):
      annotations.append(_encode_annotation(mask, class_id, image_id,
                                            len(annotations) + 1))
  coco = {
      "info": {"description": f"synthetic shapes ({split}, "
                              f"{'easy' if easy else 'hard'})"},
      "images": images,
      "annotations": annotations,
      "categories": CATEGORIES,
  }
  path = os.path.join(output_dir, split, "annotations.json")
  with open(path, "w") as f:
    json.dump(coco, f, separators=(",", ":"))
  return path


def make_shapes(output_dir, num_train=300, num_val=60, seed=0, easy=False,
                image_size=160):
  """Writes the train and val splits; returns {split: annotations path}."""
  counts = {"train": num_train, "val": num_val}
  return {split: write_split(output_dir, split, count,
                             split_seed(seed, split), easy, image_size)
          for split, count in counts.items()}


def summarize_split(annotations_path):
  """Counts for a written split, used by the CLI and the tests."""
  with open(annotations_path) as f:
    coco = json.load(f)
  names = {c["id"]: c["name"] for c in coco["categories"]}
  per_image = {image["id"]: ([], []) for image in coco["images"]}
  per_class = {name: 0 for name in names.values()}
  for ann in coco["annotations"]:
    masks, classes = per_image[ann["image_id"]]
    masks.append(mask_utils.decode(ann["segmentation"]).astype(bool))
    classes.append(ann["category_id"])
    per_class[names[ann["category_id"]]] += 1
  touching = sum(touching_same_class_pair(masks, classes)
                 for masks, classes in per_image.values())
  return {
      "images": len(coco["images"]),
      "instances": len(coco["annotations"]),
      "instances_per_class": per_class,
      "touching_fraction": touching / max(len(coco["images"]), 1),
  }
