"""What the two examples share, written as a user of tce-jax would write it: label maps made
here (no dataset to download), a small Flax network, the optimizer, and the user's own loader
that picks a batch of images from D_c. Nothing here comes from tce-jax's training code.

Four classes: background, two common squares and one rare square (in about 1 image in 6),
each class drawn in its own colour over noise, so a few dozen steps learn them.
"""

import flax.linen as nn
import numpy as np
import optax

NUM_CLASSES, NUM_IMAGES, SIZE, BATCH = 4, 64, 32, 8
RARE_CLASS = 3
PRESENCE = (0.0, 0.8, 0.8, 0.15)  # the chance that an image holds a square of class c
COLOURS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """images [N, S, S, 3] float32 and label maps [N, S, S] int32 (255 on a 1-pixel border:
  the ignore label, as annotators leave around objects)."""
  rng = np.random.default_rng(seed)
  labels = np.zeros((NUM_IMAGES, SIZE, SIZE), np.int32)
  for n in range(NUM_IMAGES):
    for c in range(1, NUM_CLASSES):
      if rng.random() < PRESENCE[c]:
        y, x = rng.integers(1, SIZE - 10, 2)
        side = int(rng.integers(4, 10))
        labels[n, y - 1:y + side + 1, x - 1:x + side + 1] = 255
        labels[n, y:y + side, x:x + side] = c
  images = COLOURS[np.where(labels == 255, 0, labels)]
  images += rng.normal(scale=0.3, size=images.shape).astype(np.float32)
  return images, labels


class Net(nn.Module):
  """Three convolutions: [B, H, W, 3] -> logits [B, H, W, NUM_CLASSES]."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    return nn.Conv(NUM_CLASSES, (1, 1))(x)


def optimizer() -> optax.GradientTransformation:
  return optax.adam(1e-2)


def batch_of_class(members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The user's loader: BATCH image indices drawn from D_c (`members`), with replacement."""
  return rng.choice(members, BATCH)


def class_iou(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[NUM_CLASSES] IoU (%) of the predictions over the labelled pixels."""
  predicted, valid = np.argmax(logits, -1), labels != 255
  iou = []
  for c in range(NUM_CLASSES):
    inter = np.sum((predicted == c) & (labels == c) & valid)
    union = np.sum(((predicted == c) | (labels == c)) & valid)
    iou.append(100.0 * inter / max(union, 1))
  return np.array(iou)
