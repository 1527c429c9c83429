"""Describes the synthetic dataset: per-class pixel share and image share, and a sample grid.

  python scripts/describe_synthetic.py --out=docs
writes docs/synthetic_samples.png and prints a markdown table of the train split's statistics.
Another profile or size: `--config.dataset.synthetic.profile=v3 --config.dataset.synthetic.
height=256 --config.dataset.synthetic.width=512` (the picture is then named
synthetic_samples_v3.png).
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image

from tce_jax import evaluation
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, colorize

FLAGS = flags.FLAGS
flags.DEFINE_string('out', 'docs', 'Folder for synthetic_samples.png.')
flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: ~/tensorflow_datasets).')
flags.DEFINE_integer('samples', 6, 'Number of sample scenes in the picture.')
config_flags.DEFINE_config_file('config', 'configs/synthetic_mcce.py',
                                'Config whose dataset.synthetic fields say which dataset.')


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
  app.run(main)
