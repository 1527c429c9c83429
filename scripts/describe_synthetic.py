"""Describes the synthetic dataset: per-class pixel share and image share, object sizes, and a
sample grid.

  python scripts/describe_synthetic.py --out=docs
writes docs/synthetic_samples_<profile>.png (v1: docs/synthetic_samples.png) and prints
markdown tables of the splits' statistics: per class the share of pixels and of images, and the
size of its objects in the train split. An object is a connected region of the class in a label
map (8-connectivity): what a model sees of it, so an occluded car split in two counts twice and
touching poles count once. Another profile or size: e.g. `--config.dataset.synthetic.profile=v1
--config.dataset.synthetic.height=128 --config.dataset.synthetic.width=256`.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image
from scipy import ndimage

from tce_jax import evaluation
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, colorize

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a script (the tests import this module)."""
  flags.DEFINE_string('out', 'docs', 'Folder for the sample picture.')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: ~/tensorflow_datasets).')
  flags.DEFINE_integer('samples', 6, 'Number of sample scenes in the picture.')
  flags.DEFINE_integer('size_images', 500,
                       'Train images whose objects are measured (the first N).')
  config_flags.DEFINE_config_file('config', 'configs/synthetic_mcce.py',
                                  'Config whose dataset.synthetic fields say which dataset.')


def object_sizes(label: np.ndarray, num_classes: int) -> list[np.ndarray]:
  """Per class, the [n, 3] int array (pixels, box height, box width) of its objects in one
  label map: the connected regions of the class under 8-connectivity (ignore = 255 is no
  class)."""
  sizes = []
  for c in range(num_classes):
    regions, n = ndimage.label(label == c, structure=np.ones((3, 3), bool))
    if n == 0:
      sizes.append(np.zeros((0, 3), np.int64))
      continue
    pixels = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    boxes = ndimage.find_objects(regions)
    sizes.append(np.array([(p, b[0].stop - b[0].start, b[1].stop - b[1].start)
                           for p, b in zip(pixels, boxes)], np.int64))
  return sizes


def object_size_table(labels: list[np.ndarray], num_classes: int, class_names: list[str],
                      min_pixels: int = 10) -> str:
  """Markdown: per class, objects per image that holds the class, and the median and the
  10th-90th percentiles of the objects' pixels, box height and box width (pixels). Regions
  under `min_pixels` (slivers where drawn shapes meet) are left out of the sizes and counted
  apart, as a share of all regions."""
  per_class = [[] for _ in range(num_classes)]
  holding = np.zeros(num_classes, np.int64)
  for label in labels:
    for c, sizes in enumerate(object_sizes(label, num_classes)):
      per_class[c].append(sizes)
      holding[c] += len(sizes) > 0
  height, width = labels[0].shape
  lines = [f'Objects in {len(labels)} train images of {height} x {width} (connected regions; '
           'median [10th - 90th percentile]):', '',
           '| class | objects per image holding it | pixels | % of the image | box height | '
           f'box width | regions < {min_pixels} px (%) |', '|---|---|---|---|---|---|---|']
  for c in range(num_classes):
    regions = np.concatenate(per_class[c])
    sizes = regions[regions[:, 0] >= min_pixels]
    if not len(sizes):
      lines.append(f'| {class_names[c]} | 0 | | | | | {"" if not len(regions) else 100:} |')
      continue
    cells = []
    for values in (sizes[:, 0], 100 * sizes[:, 0] / (height * width), sizes[:, 1], sizes[:, 2]):
      low, mid, high = np.percentile(values, [10, 50, 90])
      digits = 3 if values.dtype.kind == 'f' else 0
      cells.append(f'{mid:.{digits}f} [{low:.{digits}f} - {high:.{digits}f}]')
    lines.append(f'| {class_names[c]} | {len(sizes) / holding[c]:.1f} | ' + ' | '.join(cells) +
                 f' | {100 * (1 - len(sizes) / len(regions)):.0f} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  config = FLAGS.config
  if FLAGS.data_dir is not None:
    config.dataset.data_dir = FLAGS.data_dir
  for split in ('train', 'validation'):
    source = datasets.load_source(config, split)
    index = class_index_lib.load_class_index(source)
    pixels = index.pixel_counts / index.pixel_counts.sum()
    images = index.image_counts / len(source)
    print(f'\n{split}: {len(source)} images of {source[0]["label"].shape}')
    print('| class | pixels (%) | images containing it (%) |')
    print('|---|---|---|')
    for c in np.argsort(-pixels):
      print(f'| {CITYSCAPES_CLASSES[c]} | {100 * pixels[c]:.3f} | {100 * images[c]:.1f} |')
  # The trivial predictor: the train split's most frequent class everywhere.
  majority = int(np.argmax(class_index_lib.load_class_index(
      datasets.load_source(config, 'train')).pixel_counts))
  validation = datasets.load_source(config, 'validation')
  confusion = np.zeros((len(CITYSCAPES_CLASSES),) * 2, np.int64)
  for i in range(len(validation)):
    label = validation[i]['label']
    confusion[:, majority] += np.bincount(label[label != 255], minlength=confusion.shape[0])
  print(f'\nTrivial predictor ("{CITYSCAPES_CLASSES[majority]}" everywhere) on validation: '
        f'mIoU {np.nanmean(evaluation.iou_from_confusion(confusion)):.2f}, pixel accuracy '
        f'{100 * confusion[majority, majority] / confusion.sum():.2f}')
  source = datasets.load_source(config, 'train')
  labels = [source[i]['label'] for i in range(min(FLAGS.size_images, len(source)))]
  print('\n' + object_size_table(labels, len(CITYSCAPES_CLASSES), list(CITYSCAPES_CLASSES)))
  rows = []
  for i in range(FLAGS.samples):
    record = source[i]
    rows.append(np.concatenate([record['image'], colorize(record['label'], CITYSCAPES_PALETTE)],
                               axis=1))
  os.makedirs(FLAGS.out, exist_ok=True)
  profile = config.dataset.synthetic.profile
  path = os.path.join(FLAGS.out, 'synthetic_samples.png' if profile == 'v1' else
                      f'synthetic_samples_{profile}.png')
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)
  print(f'\nWrote {path} (image | labels in the Cityscapes palette, ignore = black).')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
