"""Where labels go in a scatter figure: the Pareto front of a point set and label positions
that overlap neither each other nor the markers (pure geometry, no plotting)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[int]:
  """Indices of the points no other point matches or beats on both coordinates while beating
  it on one (higher is better on both), sorted by x."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  front = [i for i in range(x.size)
           if not np.any((x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i])))]
  return sorted(front, key=lambda i: (x[i], -y[i]))


def label_offsets(points: np.ndarray, sizes: np.ndarray, bounds: tuple[float, float, float, float],
                  *, obstacles: Sequence[tuple[float, float, float, float]] = (),
                  marker: float = 5.0,
                  radii: Sequence[float] = (3, 8, 14, 22, 32, 44, 58, 75, 95)) -> np.ndarray:
  """Where to put each point's label so that no two labels, and no label and a marker, overlap.

  Pure geometry in display pixels (y up): `points` [n, 2], `sizes` [n, 2] (each label's width
  and height), `bounds` (x0, y0, x1, y1) the box the labels must stay in, `marker` the half
  width of the square kept clear around every point, `obstacles` more boxes (x0, y0, x1, y1)
  to keep clear (a legend). Greedy: the points are placed from the
  most crowded one, each at the first free spot on rings of growing `radii` (right of the
  point first, then above, below and left), so an isolated label sits next to its point and a
  crowded one moves out to where there is room (the caller draws a leader line when it is
  far). Returns [n, 2] offsets of each label's anchor: its left edge's middle for an offset
  to the right, its right edge's middle for one to the left. A label that fits nowhere gets
  the first ring's spot to the right (it may overlap).
  """
  points = np.asarray(points, float).reshape(-1, 2)
  sizes = np.asarray(sizes, float).reshape(-1, 2)
  n = len(points)
  taken = [(px - marker, py - marker, px + marker, py + marker) for px, py in points]
  taken += [tuple(b) for b in obstacles]
  angles = np.deg2rad([0, 30, -30, 60, -60, 90, -90, 120, -120, 150, -150, 180])
  distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
  order = np.argsort(-(distance < 60).sum(1), kind='stable')  # the most crowded first
  offsets = np.zeros((n, 2))

  def box(i: int, dx: float, dy: float) -> tuple[float, float, float, float]:
    (px, py), (w, h) = points[i], sizes[i]
    x0 = px + dx if dx >= 0 else px + dx - w
    return (x0, py + dy - h / 2, x0 + w, py + dy + h / 2)

  def free(b: tuple[float, float, float, float]) -> bool:
    if b[0] < bounds[0] or b[1] < bounds[1] or b[2] > bounds[2] or b[3] > bounds[3]:
      return False
    return not any(b[0] < t[2] and t[0] < b[2] and b[1] < t[3] and t[1] < b[3] for t in taken)

  for i in order:
    choice = (radii[0] + marker, 0.0)
    for r in radii:
      spots = [((r + marker) * np.cos(a), (r + marker) * np.sin(a)) for a in angles]
      spot = next((s for s in spots if free(box(i, *s))), None)
      if spot is not None:
        choice = spot
        break
    offsets[i] = choice
    taken.append(box(i, *choice))
  return offsets
