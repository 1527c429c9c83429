"""Describes a prepared dataset (the config's): per class and split the pixel share, the share
of images holding it and the size of its objects, and a sample grid.

  python scripts/describe_dataset.py --out=docs                       # the synthetic benchmark
  python scripts/describe_dataset.py --config=configs/camvid_mcce.py --out=docs/camvid
writes <out>/<dataset>_samples.png (the synthetic dataset: synthetic_samples_<profile>.png, v1:
synthetic_samples.png) and prints markdown tables: per split and class the share of pixels and
of images, the sizes of its objects, and the trivial predictor's score on the eval split. An
object is a connected region of the class in a label map (8-connectivity): what a model sees
of it, so an occluded car split in two counts twice and touching poles count once. Another
synthetic profile or size: e.g. `--config.dataset.synthetic.profile=v1
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
from tce_jax.data.classes import colorize

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a script (the tests import this module)."""
  flags.DEFINE_string('out', 'docs', 'Folder for the sample picture.')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: ~/tensorflow_datasets).')
  flags.DEFINE_integer('samples', 6, 'Number of sample scenes in the picture.')
  flags.DEFINE_integer('size_images', 500,
                       'Images of each split whose objects are measured (the first N).')
  config_flags.DEFINE_config_file('config', 'configs/synthetic_mcce.py',
                                  'Config whose dataset fields say which dataset.')


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
                      min_pixels: int = 10, split: str = 'train') -> str:
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
  lines = [f'Objects in {len(labels)} {split} images of {height} x {width} (connected regions; '
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
  spec = datasets.get_spec(config)
  names, num_classes = list(spec.class_names), spec.num_classes
  splits = sorted(datasets.get_builder(config).info.splits,
                  key=lambda s: ('train', 'validation', 'test').index(s)
                  if s in ('train', 'validation', 'test') else 9)
  shares = {}
  for split in splits:
    source = datasets.load_source(config, split)
    index = class_index_lib.load_class_index(source)
    shares[split] = (index.pixel_counts / index.pixel_counts.sum(),
                     index.image_counts / len(source), len(source))
  print(f'{config.dataset.name}: pixels (%) and images holding the class (%), per split '
        '(void / ignored pixels left out):\n')
  print('| class | ' + ' | '.join(f'{s} pixels | {s} images' for s in splits) + ' |')
  print('|---|' + '---|---|' * len(splits))
  train_pixels = shares[splits[0]][0]
  for c in np.argsort(-train_pixels):
    print(f'| {names[c]} | ' + ' | '.join(f'{100 * shares[s][0][c]:.2f} | '
                                         f'{100 * shares[s][1][c]:.0f}'
                                         for s in splits) + ' |')
  print('\nImages: ' + ', '.join(f'{s} {shares[s][2]}' for s in splits))
  # The trivial predictor: the train split's most frequent class everywhere.
  majority = int(np.argmax(train_pixels))
  evaluated = datasets.load_source(config, config.dataset.eval_split)
  confusion = np.zeros((num_classes,) * 2, np.int64)
  for i in range(len(evaluated)):
    label = evaluated[i]['label']
    confusion[:, majority] += np.bincount(label[label != 255], minlength=num_classes)
  print(f'\nTrivial predictor ("{names[majority]}" everywhere) on {config.dataset.eval_split}: '
        f'mIoU {np.nanmean(evaluation.iou_from_confusion(confusion)):.2f}, pixel accuracy '
        f'{100 * confusion[majority, majority] / confusion.sum():.2f}')
  for split in splits:
    source = datasets.load_source(config, split)
    labels = [source[i]['label'] for i in range(min(FLAGS.size_images, len(source)))]
    print('\n' + object_size_table(labels, num_classes, names, split=split))
  source = datasets.load_source(config, config.dataset.train_split)
  rows = []
  for i in np.linspace(0, len(source) - 1, FLAGS.samples).astype(int):
    record = source[int(i)]
    rows.append(np.concatenate([record['image'], colorize(record['label'], spec.palette)],
                               axis=1))
  os.makedirs(FLAGS.out, exist_ok=True)
  if config.dataset.name == 'synthetic':
    profile = config.dataset.synthetic.profile
    name = 'synthetic_samples.png' if profile == 'v1' else f'synthetic_samples_{profile}.png'
  else:
    name = f'{config.dataset.name}_samples.png'
  path = os.path.join(FLAGS.out, name)
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)
  print(f'\nWrote {path} (image | labels in the dataset\'s palette, ignore = black).')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
