"""The sizes of resized images: pure arithmetic that the input pipeline (which resizes) and
inference (which rescales on the device) must agree on, in a module of its own so that
inference needs no loader code."""

from __future__ import annotations

from typing import Sequence


def keep_ratio_scale(height: int, width: int, size: Sequence[int]) -> float:
  """The factor that fits an image into size = (long, short) keeping its aspect ratio
  (mmsegmentation's `keep_ratio` resize: the long side <= long, the short side <= short)."""
  long_side, short_side = max(size), min(size)
  return min(long_side / max(height, width), short_side / min(height, width))


def resized_shape(height: int, width: int, scale: float) -> tuple[int, int]:
  """The (height, width) that `pipeline.resize` gives an image at `scale`."""
  if scale == 1.0:
    return height, width
  return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)
