"""Checks of an (image, label map) pair of a manually downloaded dataset while it is prepared:
both decode, they have one size, and the label map holds 8-bit ids below the dataset's count.
Every failure names the file (`PreparationError`), so that one bad file of thousands is found."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


class PreparationError(ValueError):
  """A file of a manual download cannot be used; names the file."""


def _open(where: str, data: bytes, what: str) -> Image.Image:
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except Exception as e:
    raise PreparationError(f'{where} is not a readable {what} ({e})') from e
  return image


def check_pair(image_where: str, image_bytes: bytes, label_where: str, label_bytes: bytes, *,
               num_ids: int, dataset: str, note: str = '') -> Image.Image:
  """The decoded image, once the pair passed the checks; `*_where` name the files in messages,
  `num_ids` bounds the stored label ids (0..num_ids - 1), `note` follows the id range."""
  image = _open(image_where, image_bytes, 'image')
  label = _open(label_where, label_bytes, 'label map')
  if label.size != image.size:
    raise PreparationError(f'{label_where} is {label.size[0]}x{label.size[1]} but its image '
                           f'{image_where.rsplit("/", 1)[-1]} is {image.size[0]}x{image.size[1]}')
  if label.mode not in ('L', 'P'):
    raise PreparationError(f'{label_where} has mode {label.mode}, expected 8-bit ids')
  top = int(np.asarray(label).max())
  if top >= num_ids:
    raise PreparationError(f'{label_where} holds label id {top}; {dataset} ids are '
                           f'0..{num_ids - 1}{note}')
  return image
