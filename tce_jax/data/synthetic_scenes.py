"""Procedural street scenes with Cityscapes' 19 classes and a long-tailed class distribution.

Each scene is painted back to front (sky, buildings, road, ..., vehicles, people) on a label
map and an RGB image. Appearance is a per-class colour with per-object jitter, per-class
texture and pixel noise, so the task is learnable but not trivial. Some pairs are made
deliberately confusable: wall vs building (same colours, different texture and height),
rider vs person (identical appearance, context only; in profile 'v3' the same clothes and
sizes, a rider seated with a helmet), truck vs bus vs train (shared paint).
"""

from __future__ import annotations

import numpy as np

from tce_jax.data.classes import CITYSCAPES_CLASSES
from tce_jax.labels import IGNORE_INDEX

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(len(CITYSCAPES_CLASSES))

# Probabilities of the optional scene elements; they set the long tail.
P_WALL, P_FENCE, P_TRUCK, P_BUS, P_TRAIN = 0.25, 0.2, 0.1, 0.08, 0.02
P_BICYCLE, P_MOTORCYCLE = 0.04, 0.025
P_RIDER_ON_BICYCLE, P_RIDER_ON_MOTORCYCLE = 0.5, 0.8
P_RIDER_ON_BICYCLE_V3 = 0.7  # riders in ~8% of the 'v3' images (docs), as in Cityscapes' tail
P_LIGHT_ON_POLE, P_SIGN_ON_POLE = 0.15, 0.35
P_EGO_HOOD = 0.5
SKIN = (210, 170, 140)
VEHICLE_PAINT = np.array([(200, 200, 205), (160, 40, 40), (40, 60, 140), (230, 210, 60),
                          (60, 60, 65), (240, 240, 240)], np.float32)


PROFILES = ('v1', 'v2', 'v3')
# Profile 'v2' draws the three rarest object classes a little more often (each still in at
# most 5% of the images and 0.1% of the pixels), so that a validation split holds enough of
# them to score: in 'v1', trains are in 1.7% of the images, one or two of 300 validation ones.
RARE_PROBABILITIES = {'v1': {'train': P_TRAIN, 'bicycle': P_BICYCLE,
                             'motorcycle': P_MOTORCYCLE},
                      'v2': {'train': 0.04, 'bicycle': 0.035, 'motorcycle': 0.03},
                      'v3': {'train': 0.04, 'bicycle': 0.10, 'motorcycle': 0.035}}
# Profile 'v3' draws people and two-wheelers with the shapes that tell them apart in real
# streets (a pedestrian stands on two legs; a rider sits, leans to the handlebar and wears a
# helmet; a bicycle is a coloured diamond frame between two spoked rings; a motorcycle a
# heavy body with a tank and a seat), and places two-wheelers on the near half of the road
# (at most 0.1% of the pixels each): in 'v1' / 'v2' a rider is a pedestrian standing on a
# bar, and a far bicycle is a ring of a pixel or two, which no model of the study's budget
# resolves (docs/synthetic_dataset.md).
HELMET_PAINT = np.array([(230, 230, 230), (230, 60, 40), (250, 200, 30), (40, 80, 200),
                         (20, 20, 20)], np.float32)
BICYCLE_PAINT = np.array([(30, 30, 30), (40, 90, 200), (200, 40, 40), (230, 230, 230),
                          (40, 150, 80)], np.float32)


class _Canvas:
  """A label map and an image painted together; later strokes cover earlier ones.

  `unit`: the size in pixels of what profile 'v1' draws 1 pixel wide (poles, lights, signs,
  windows, fence slats, lane marks): 1 in 'v1' whatever the resolution, height / 128 in 'v2',
  where every object keeps its size relative to the image.
  """

  def __init__(self, rng: np.random.Generator, height: int, width: int, unit: float = 1.0,
               rare: dict[str, float] | None = None, shapes: bool = False):
    self.rng = rng
    self.unit = unit
    self.shapes = shapes  # profile 'v3': people and two-wheelers drawn by their parts
    self.rare = RARE_PROBABILITIES['v1'] if rare is None else rare
    self.h, self.w = height, width
    self.label = np.full((height, width), SKY, np.uint8)
    self.image = np.zeros((height, width, 3), np.float32)
    self.yy, self.xx = np.mgrid[0:height, 0:width]

  def paint(self, mask: np.ndarray, cls: int, color, noise: float = 0.0,
            box: tuple[int, int, int, int] | None = None):
    """Paints `cls` with `color` (+ gaussian texture noise) where `mask` holds.

    `box` = (y0, y1, x0, x1) restricts the work to a sub-window; `mask` then has its shape.
    """
    y0, y1, x0, x1 = box if box is not None else (0, self.h, 0, self.w)
    y0, x0 = max(y0, 0), max(x0, 0)
    y1, x1 = min(y1, self.h), min(x1, self.w)
    if y1 <= y0 or x1 <= x0:
      return
    if box is not None:
      by, bx = y0 - box[0], x0 - box[2]
      mask = mask[by:by + y1 - y0, bx:bx + x1 - x0]
    color = np.broadcast_to(np.asarray(color, np.float32), mask.shape + (3,))
    if noise:
      color = color + self.rng.normal(0, noise, mask.shape + (1,)).astype(np.float32)
    self.label[y0:y1, x0:x1][mask] = cls
    self.image[y0:y1, x0:x1][mask] = color[mask]

  def rect(self, y0, y1, x0, x1, cls, color, noise=0.0):
    y0, y1, x0, x1 = (int(round(v)) for v in (y0, y1, x0, x1))
    self.paint(np.ones((max(y1 - y0, 0), max(x1 - x0, 0)), bool), cls, color, noise,
               (y0, y1, x0, x1))

  def ellipse(self, cy, cx, ry, rx, cls, color, noise=0.0):
    y0, y1 = int(cy - ry), int(cy + ry) + 1
    x0, x1 = int(cx - rx), int(cx + rx) + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0
    self.paint(mask, cls, color, noise, (y0, y1, x0, x1))

  def ring(self, cy, cx, r_out, r_in, cls, color, noise=0.0):
    """A circle of radius `r_out` without its inside of radius `r_in` (left unpainted)."""
    y0, y1 = int(cy - r_out), int(cy + r_out) + 1
    x0, x1 = int(cx - r_out), int(cx + r_out) + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    self.paint((d2 <= max(r_out, 0.5) ** 2) & (d2 > r_in ** 2), cls, color, noise,
               (y0, y1, x0, x1))

  def line(self, y0, x0, y1, x1, thick, cls, color, noise=0.0):
    """A stroke `thick` pixels wide from (y0, x0) to (y1, x1), round ends."""
    r = max(thick / 2, 0.5)
    box = (int(min(y0, y1) - r), int(max(y0, y1) + r) + 1,
           int(min(x0, x1) - r), int(max(x0, x1) + r) + 1)
    yy, xx = np.mgrid[box[0]:box[1], box[2]:box[3]]
    dy, dx = y1 - y0, x1 - x0
    along = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-9), 0, 1)
    mask = (yy - y0 - along * dy) ** 2 + (xx - x0 - along * dx) ** 2 <= r * r
    self.paint(mask, cls, color, noise, box)

  def jitter(self, color, amount=20.0):
    return np.clip(np.asarray(color, np.float32) + self.rng.normal(0, amount, 3), 0, 255)


def _background(c: _Canvas, horizon: int):
  """Sky, buildings, vegetation, road, sidewalks and terrain."""
  rng, h, w, u = c.rng, c.h, c.w, c.unit
  sky = np.array([120, 170, 225], np.float32) * rng.uniform(0.8, 1.1)
  grad = (c.yy[..., None] / h) * np.array([60, 40, 10], np.float32)
  c.label[:] = SKY
  c.image[:] = sky + grad
  windows = ((c.yy % (8 * u)) < 4 * u) & ((c.xx % (10 * u)) < 5 * u)
  x = 0
  while x < w:  # a row of buildings with windows, sometimes a gap of sky
    bw = int(rng.uniform(0.12, 0.35) * w)
    if rng.uniform() > 0.12:
      top = horizon - rng.uniform(0.12, 0.42) * h
      color = c.jitter((125, 115, 105), 25)
      c.rect(top, horizon + 2, x, x + bw, BUILDING, color, 6)
      box = (int(top + 4 * u), int(horizon - 3 * u), int(x + 2 * u), int(x + bw - 2 * u))
      c.paint(windows[box[0]:box[1], box[2]:box[3]], BUILDING, color * 0.55, 6, box)
    x += bw
  for _ in range(rng.poisson(1.5)):  # trees: crown and trunk
    cx, r = rng.uniform(0, w), rng.uniform(0.06, 0.16) * h
    cy = horizon - rng.uniform(0.1, 0.3) * h
    c.rect(cy, horizon + 3 * u, cx - 1.5 * u, cx + 1.5 * u, VEGETATION, (80, 60, 40), 8)
    c.ellipse(cy, cx, r, r * rng.uniform(1.0, 1.6), VEGETATION, c.jitter((70, 120, 50)), 25)
  # Road: a trapezoid towards a vanishing point; sidewalks or terrain beside it.
  vx = rng.uniform(0.35, 0.65) * w
  depth = np.clip((c.yy - horizon) / max(h - horizon, 1), 0, None)
  left = vx - rng.uniform(0.5, 0.9) * w * depth
  right = vx + rng.uniform(0.5, 0.9) * w * depth
  side = rng.uniform(0.12, 0.3) * w * depth
  below = c.yy >= horizon
  for edge, outside, sign in ((left, c.xx < left, -1), (right, c.xx > right, 1)):
    cls = TERRAIN if rng.uniform() < 0.5 else SIDEWALK
    color = (90, 150, 70) if cls == TERRAIN else (175, 160, 165)
    c.paint(below & outside, cls, c.jitter(color, 12), 10)
    if cls == TERRAIN:  # a strip of sidewalk next to the road anyway
      c.paint(below & outside & (np.abs(c.xx - edge) < side * 0.35), SIDEWALK,
              c.jitter((175, 160, 165), 12), 10)
  road = below & (c.xx >= left) & (c.xx <= right)
  c.paint(road, ROAD, c.jitter((95, 90, 100), 10), 7)
  lane = road & (np.abs(c.xx - vx) < (1 + 2 * depth) * u) & ((c.yy // (6 * u)) % 2 == 0)
  c.paint(lane, ROAD, (220, 220, 210), 5)
  return vx, left, right


def _barriers(c: _Canvas, horizon: int):
  """Low walls (coloured like buildings, no windows) and striped fences at the horizon."""
  rng, h, w, u = c.rng, c.h, c.w, c.unit
  for p, cls in ((P_WALL, WALL), (P_FENCE, FENCE)):
    if rng.uniform() < p:
      x0 = rng.uniform(0, 0.6) * w
      x1 = x0 + rng.uniform(0.2, 0.45) * w
      top = horizon - rng.uniform(0.05, 0.12) * h
      if cls == WALL:
        c.rect(top, horizon + 3 * u, x0, x1, WALL, c.jitter((130, 118, 105), 25), 4)
      else:
        stripes = (c.xx % (4 * u)) < 2 * u
        box = (int(top), int(horizon + 3 * u), int(x0), int(x1))
        c.paint(stripes[box[0]:box[1], box[2]:box[3]], FENCE, c.jitter((150, 130, 110)), 8,
                box)


def _poles(c: _Canvas, horizon: int, left: np.ndarray, right: np.ndarray):
  """Thin poles on the sidewalks, some carrying a traffic light or a sign."""
  rng, h, w, u = c.rng, c.h, c.w, c.unit
  for _ in range(rng.poisson(2.0 if c.shapes else 1.5)):
    yb = int(horizon + rng.uniform(0.05, 0.4) * (h - horizon))
    edge = left[yb, 0] if rng.uniform() < 0.5 else right[yb, 0]
    x = edge + rng.uniform(-0.04, 0.04) * w
    top = horizon - rng.uniform(0.2, 0.38) * h
    thick = (1 + int(rng.uniform() < 0.5) + int(c.shapes)) * u  # 'v3': 2-3 units
    c.rect(top, yb, x, x + thick, POLE, c.jitter((140, 140, 145), 10), 5)
    # 'v3': lights on twice as many poles, lights and signs 1.5 times as large (Cityscapes
    # has lights in about half of its images, and 10 times our v1 share of their pixels).
    s = 1.5 * u if c.shapes else u
    if rng.uniform() < (2 * P_LIGHT_ON_POLE if c.shapes else P_LIGHT_ON_POLE):
      c.rect(top - 6 * s, top + s, x - s, x + 3 * s, LIGHT, (30, 30, 30), 4)
      c.rect(top - 5 * s, top - 3 * s, x, x + 2 * s, LIGHT,
             [(230, 40, 30), (240, 200, 40), (40, 220, 90)][rng.integers(3)], 4)
    elif rng.uniform() < P_SIGN_ON_POLE:
      cy, color = top + 3 * s, [(230, 230, 40), (220, 40, 40), (40, 90, 200)][rng.integers(3)]
      c.ellipse(cy, x + 0.5 * u, 3 * s, 3 * s, SIGN, color, 6)


def _vehicle(c: _Canvas, cls: int, yb: float, cx: float, scale: float):
  """A car, truck, bus or train standing on the road at bottom row `yb`."""
  rng, h = c.rng, c.h
  paint = VEHICLE_PAINT[rng.integers(len(VEHICLE_PAINT))]
  height = {CAR: 0.3, TRUCK: 0.5, BUS: 0.55, TRAIN: 0.5}[cls] * h * scale
  length = {CAR: 1.7, TRUCK: 2.0, BUS: 2.6, TRAIN: 6.0}[cls] * height
  x0, top = cx - length / 2, yb - height
  c.rect(top, yb, x0, x0 + length, cls, c.jitter(paint, 15), 6)
  if cls == CAR:
    c.rect(top + 0.1 * height, top + 0.45 * height, x0 + 0.2 * length, x0 + 0.8 * length,
           CAR, (50, 60, 70), 6)
  elif cls == TRUCK:  # a cab with a windscreen in front of a tall box
    c.rect(top + 0.3 * height, yb, x0, x0 + 0.25 * length, TRUCK, c.jitter(paint, 25), 6)
    c.rect(top + 0.35 * height, top + 0.6 * height, x0 + 0.03 * length, x0 + 0.2 * length,
           TRUCK, (50, 60, 70), 6)
  else:  # buses and trains: a band of windows
    band = (top + 0.2 * height, top + 0.5 * height)
    c.rect(*band, x0 + 0.03 * length, x0 + 0.97 * length, cls, (45, 55, 70), 6)
  for wx in (x0 + 0.2 * length, x0 + 0.8 * length):
    c.ellipse(yb, wx, 0.12 * height, 0.12 * height, cls, (25, 25, 25), 4)


def _person(c: _Canvas, cls: int, yb: float, cx: float, scale: float):
  """A pedestrian or a rider: identical appearance, context differs ('v1', 'v2')."""
  rng, h = c.rng, c.h
  height = 0.4 * h * scale
  if c.shapes:
    _pedestrian(c, yb, cx, height)
    return
  c.rect(yb - 0.8 * height, yb, cx - 0.12 * height, cx + 0.12 * height, cls,
         c.jitter((rng.uniform(30, 200),) * 3, 40), 8)
  c.ellipse(yb - 0.88 * height, cx, 0.1 * height, 0.08 * height, cls, c.jitter(SKIN), 6)


def _clothes(c: _Canvas):
  """'v3': clothes of any colour (a grey of 30-200 in 'v1' / 'v2')."""
  return c.jitter(c.rng.uniform(30, 220, 3), 15)


def _trousers(c: _Canvas):
  """'v3': a dark grey for the legs of pedestrians and riders."""
  return c.jitter((c.rng.uniform(20, 120),) * 3, 20)


def _head(c: _Canvas, cls: int, cy: float, cx: float, height: float):
  """'v3': the head of a person `height` tall, centred at (cy, cx)."""
  c.ellipse(cy, cx, 0.09 * height, 0.075 * height, cls, c.jitter(SKIN), 6)


def _pedestrian(c: _Canvas, yb: float, cx: float, height: float):
  """'v3': a person standing on two legs (legs 45% of the height, torso, head)."""
  clothes, legs = _clothes(c), _trousers(c)
  w = 0.12 * height
  stride = c.rng.uniform(0.0, 0.12) * height  # feet apart when walking
  for side in (-1, 1):
    c.line(yb - 0.45 * height, cx + side * 0.5 * w, yb, cx + side * (0.5 * w + stride / 2),
           0.8 * w, PERSON, legs, 8)
  c.rect(yb - 0.8 * height, yb - 0.42 * height, cx - w, cx + w, PERSON, clothes, 8)
  _head(c, PERSON, yb - 0.88 * height, cx, height)


def _rider(c: _Canvas, seat_y: float, seat_x: float, bar_y: float, bar_x: float,
           pedal_y: float, height: float):
  """'v3': a person seated at (seat_y, seat_x), leaning to the handlebar, in a helmet."""
  clothes = _clothes(c)
  w = 0.12 * height
  lean = np.sign(bar_x - seat_x)
  shoulder_y, shoulder_x = seat_y - 0.38 * height, seat_x + lean * 0.12 * height
  c.line(seat_y, seat_x, pedal_y, seat_x + lean * 0.1 * height, 0.8 * w, RIDER,
         _trousers(c), 8)
  c.line(seat_y, seat_x, shoulder_y, shoulder_x, 2 * w, RIDER, clothes, 8)
  c.line(shoulder_y, shoulder_x, bar_y, bar_x, 0.6 * w, RIDER, clothes, 8)
  head_y, head_x = shoulder_y - 0.1 * height, shoulder_x + lean * 0.03 * height
  _head(c, RIDER, head_y, head_x, height)
  c.ellipse(head_y - 0.03 * height, head_x, 0.07 * height, 0.085 * height, RIDER,
            c.jitter(HELMET_PAINT[c.rng.integers(len(HELMET_PAINT))], 15), 6)


def _two_wheeler_shaped(c: _Canvas, cls: int, yb: float, cx: float, scale: float):
  """'v3': a bicycle (diamond frame, spoked rings) or a motorcycle (body, tank, seat)."""
  rng, h = c.rng, c.h
  r = (0.13 if cls == BICYCLE else 0.11) * h * scale  # wheel radius
  facing = 1 if rng.uniform() < 0.5 else -1
  rear_x, front_x, hub_y = cx - facing * 1.7 * r, cx + facing * 1.7 * r, yb - r
  seat_y, seat_x = yb - 2.2 * r, cx - facing * 0.6 * r
  bar_y, bar_x = yb - 2.5 * r, cx + facing * 1.4 * r
  if cls == BICYCLE:
    color = c.jitter(BICYCLE_PAINT[rng.integers(len(BICYCLE_PAINT))], 15)
    tyre = c.jitter((35, 35, 35), 8)
    for wx in (rear_x, front_x):
      c.ring(hub_y, wx, r, 0.75 * r, cls, tyre, 6)  # what is behind shows through
      c.line(hub_y - 0.75 * r, wx, hub_y + 0.75 * r, wx, 0.12 * r, cls, tyre, 4)
      c.line(hub_y, wx - 0.75 * r, hub_y, wx + 0.75 * r, 0.12 * r, cls, tyre, 4)
    crank_y, crank_x = hub_y, cx - facing * 0.1 * r
    thick = 0.3 * r
    for (y0, x0), (y1, x1) in (((hub_y, rear_x), (crank_y, crank_x)),
                               ((hub_y, rear_x), (seat_y, seat_x)),
                               ((crank_y, crank_x), (seat_y, seat_x)),
                               ((seat_y, seat_x), (bar_y + 0.3 * r, bar_x)),
                               ((crank_y, crank_x), (bar_y + 0.3 * r, bar_x)),
                               ((bar_y, bar_x), (hub_y, front_x))):
      c.line(y0, x0, y1, x1, thick, cls, color, 6)
    c.line(seat_y - 0.15 * r, seat_x - 0.3 * r, seat_y - 0.15 * r, seat_x + 0.3 * r,
           0.25 * r, cls, tyre, 4)
    pedal_y = hub_y + 0.3 * r
    rider = rng.uniform() < P_RIDER_ON_BICYCLE_V3
  else:
    color = c.jitter((120, 30, 30), 25)
    for wx in (rear_x, front_x):
      c.ellipse(hub_y, wx, r, r, cls, (25, 25, 25), 4)
      c.ellipse(hub_y, wx, 0.45 * r, 0.45 * r, cls, (150, 150, 155), 6)
    c.rect(yb - 1.9 * r, yb - 0.8 * r, cx - 1.3 * r, cx + 1.3 * r, cls, color, 6)  # body
    c.ellipse(yb - 2.0 * r, cx + facing * 0.5 * r, 0.45 * r, 0.8 * r, cls, color, 6)  # tank
    c.rect(seat_y - 0.25 * r, seat_y + 0.15 * r, seat_x - 0.8 * r, seat_x + 0.4 * r, cls,
           (30, 30, 30), 4)
    c.line(bar_y, bar_x, hub_y, front_x, 0.35 * r, cls, (150, 150, 155), 4)  # fork
    pedal_y = yb - 0.8 * r
    rider = rng.uniform() < P_RIDER_ON_MOTORCYCLE
  if rider:
    _rider(c, seat_y - 0.1 * r, seat_x, bar_y, bar_x, pedal_y, 4.5 * r)


def _two_wheeler(c: _Canvas, cls: int, yb: float, cx: float, scale: float):
  """A bicycle (thin frame) or a motorcycle (heavy body), maybe with a rider on top."""
  rng, h = c.rng, c.h
  if c.shapes:
    _two_wheeler_shaped(c, cls, yb, cx, scale)
    return
  r = 0.09 * h * scale
  color = c.jitter((40, 40, 40) if cls == BICYCLE else (120, 30, 30), 15)
  for wx in (cx - 1.6 * r, cx + 1.6 * r):
    c.ellipse(yb - r, wx, r, r, cls, color, 6)
    c.ellipse(yb - r, wx, 0.6 * r, 0.6 * r, ROAD, (95, 90, 100), 6)
  body = 0.25 if cls == BICYCLE else 0.9
  c.rect(yb - 2 * r, yb - 2 * r + max(body * r, c.unit), cx - 1.6 * r, cx + 1.6 * r, cls, color,
         6)
  if rng.uniform() < (P_RIDER_ON_BICYCLE if cls == BICYCLE else P_RIDER_ON_MOTORCYCLE):
    _person(c, RIDER, yb - 1.6 * r, cx, scale * 0.9)


def _objects(c: _Canvas, horizon: int, vx: float, left: np.ndarray, right: np.ndarray):
  """Vehicles on the road and people on the sidewalks, far ones first."""
  rng, h, w = c.rng, c.h, c.w
  items = []
  if rng.uniform() < c.rare['train']:
    items.append((TRAIN, horizon + 0.08 * (h - horizon), rng.uniform(0.3, 0.7) * w))
  for cls, p in ((TRUCK, P_TRUCK), (BUS, P_BUS)):
    if rng.uniform() < p:
      items.append((cls, None, None))
  items += [(CAR, None, None)] * rng.choice(4, p=[0.35, 0.3, 0.2, 0.15])
  items += [(PERSON, None, None)] * rng.poisson(1.8 if c.shapes else 0.9)
  for cls, p in ((BICYCLE, c.rare['bicycle']), (MOTORCYCLE, c.rare['motorcycle'])):
    if rng.uniform() < p:
      items.append((cls, None, None))
  placed = []
  for cls, yb, x in items:
    if yb is None:  # 'v3' keeps two-wheelers on the near half of the road
      near = 0.5 if c.shapes and cls in (BICYCLE, MOTORCYCLE) else 0.15
      yb = horizon + rng.uniform(near, 1.0) * (h - horizon)
    row = int(min(yb, h - 1))
    if x is None:
      if cls == PERSON:  # on the sidewalk
        x = (left[row, 0] - rng.uniform(0, 0.08) * w if rng.uniform() < 0.5
             else right[row, 0] + rng.uniform(0, 0.08) * w)
      else:
        x = rng.uniform(left[row, 0], right[row, 0])
    placed.append((yb, cls, x))
  for yb, cls, x in sorted(placed, key=lambda item: item[0]):
    scale = max((yb - horizon) / (h - horizon), 0.12)
    if cls in (CAR, TRUCK, BUS, TRAIN):
      _vehicle(c, cls, yb, x, scale)
    elif cls == PERSON:
      _person(c, cls, yb, x, scale)
    else:
      _two_wheeler(c, cls, yb, x, scale)


def render_scene(rng: np.random.Generator, height: int, width: int, profile: str = 'v1'):
  """Draws one scene: image [H, W, 3] uint8 and label [H, W] uint8 (255 = ignore).

  `profile` 'v1' draws thin objects (poles, lights, signs, windows, fence slats, lane marks)
  with fixed pixel sizes, made for 128 x 256 (at a higher resolution they get relatively
  thinner); 'v2' scales them with the image (by height / 128), so a scene rendered at
  256 x 512 has 'v1''s proportions in twice the detail, and draws trains, bicycles and
  motorcycles a little more often (RARE_PROBABILITIES); 'v3' also draws people and
  two-wheelers by their parts, more pedestrians and poles, and larger lights and signs.
  """
  if profile not in PROFILES:
    raise ValueError(f'Unknown synthetic profile {profile!r}; known: {PROFILES}')
  c = _Canvas(rng, height, width, 1.0 if profile == 'v1' else height / 128,
              RARE_PROBABILITIES[profile], shapes=profile == 'v3')
  horizon = int(height * rng.uniform(0.42, 0.55))
  vx, left, right = _background(c, horizon)
  _barriers(c, horizon)
  _poles(c, horizon, left, right)
  _objects(c, horizon, vx, left, right)
  if rng.uniform() < P_EGO_HOOD:  # the ego vehicle's bonnet, unlabelled as in Cityscapes
    top = height * (1 - rng.uniform(0.05, 0.1))
    hood = c.yy > top + 0.15 * height * ((c.xx - width / 2) / width) ** 2 * 4
    c.paint(hood, IGNORE_INDEX, (30, 30, 35), 4)
  image = c.image * rng.uniform(0.7, 1.2) + rng.normal(0, 6, c.image.shape)
  return np.clip(image, 0, 255).astype(np.uint8), c.label
