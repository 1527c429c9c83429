"""Stored predictions of a run (RUN/qualitative/<index>.png, palette PNGs of class ids) and
the choice of the images the qualitative figure shows."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tce_jax import rundir


# A run's stored qualitative predictions: RUN/qualitative/<validation index>.png, the
# predicted class ids as a palette PNG (viewable as it is; exact on reading). A run that has
# them needs no checkpoint for the qualitative figure, so a study's committed records rebuild it.
QUALITATIVE_DIR = rundir.QUALITATIVE


def qualitative_indices(source, class_ids: Sequence[int], num_images: int) -> list[int]:
  """The `num_images` validation images with the most pixels of `class_ids` (ties: the lower
  index); the first images where none has any."""
  scores = np.array([np.isin(source[i]['label'], class_ids).sum() for i in range(len(source))])
  chosen = [int(i) for i in np.argsort(-scores, kind='stable')[:num_images] if scores[i] > 0]
  return chosen or list(range(min(num_images, len(source))))


def write_predictions(run: str, indices: Sequence[int], predictions: Sequence[np.ndarray],
                      palette: np.ndarray) -> None:
  """Stores each predicted label map as RUN/qualitative/<index>.png (written to a temporary
  name first: a file there is always whole)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  os.makedirs(rundir.qualitative_dir(run), exist_ok=True)
  flat = np.zeros((256, 3), np.uint8)
  flat[:len(palette)] = np.asarray(palette, np.uint8)[:256]
  for index, prediction in zip(indices, predictions, strict=True):
    image = Image.fromarray(np.asarray(prediction, np.uint8), mode='P')
    image.putpalette(flat.ravel().tolist())
    path = rundir.qualitative_path(run, index)
    image.save(path + '.tmp', format='PNG')
    os.replace(path + '.tmp', path)


def read_predictions(run: str, indices: Sequence[int]) -> list[np.ndarray] | None:
  """The stored predictions of `indices` (uint8 class ids), or None if any is missing."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  paths = [rundir.qualitative_path(run, i) for i in indices]
  if not all(os.path.exists(p) for p in paths):
    return None
  loaded = []
  for path in paths:
    with Image.open(path) as image:
      if image.mode != 'P':
        raise ValueError(f'{path}: a stored prediction must be a palette PNG of class ids, '
                         f'not mode {image.mode}')
      loaded.append(np.asarray(image, np.uint8))
  return loaded
