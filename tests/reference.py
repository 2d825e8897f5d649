"""Independent numpy models of the project's conventions, for tests."""

import numpy as np


def numpy_channel(u, v, num_directions=8, num_distance_bins=4):
  """DESIGN.md's direction x distance channel, in float64 numpy."""
  angle = np.mod(np.arctan2(v, u), 2 * np.pi)
  d = np.minimum(np.floor(angle / (2 * np.pi) * num_directions),
                 num_directions - 1)
  r = np.minimum(np.floor(np.hypot(u, v) * num_distance_bins),
                 num_distance_bins - 1)
  return (d * num_distance_bins + r).astype(np.int64)
