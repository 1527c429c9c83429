"""Prepares a dataset and its class index: `python -m tce_jax.prepare --dataset=cityscapes
--manual_dir=DIR [--data_dir=DIR]`.

Checks that the manually downloaded archives are present and are zip files, builds the tfds
dataset (array_record, random access), then reads every record of every split once: images
decode, label maps match their images and hold only known ids (a bad record stops with its
name, and the half-checked dataset is removed so that nothing looks complete), and the
training split's class index (D_c, pixel counts) is cached for Stochastic TCE and the
class-weighted losses.
"""

from __future__ import annotations

import os
import shutil
import zipfile

from absl import app
from absl import flags
from absl import logging
import tensorflow_datasets as tfds
import tqdm

from tce_jax import cli
from tce_jax.configs import default
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags, defined only when run as a program (importing defines none)."""
  flags.DEFINE_enum('dataset', None, sorted(datasets.DATASETS), 'Dataset to prepare.')
  flags.DEFINE_string('manual_dir', None, 'Folder holding the downloaded archives.')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: ~/tensorflow_datasets).')
  flags.DEFINE_bool('verify', True, 'Read every record once after preparing.')
  flags.mark_flags_as_required(['dataset'])


def check_archives(dataset: str, manual_dir: str | None):
  """Raises FileNotFoundError / ValueError naming each missing or broken archive."""
  spec = datasets.DATASETS[dataset]
  if spec.check_manual_dir is not None:
    if not manual_dir:
      raise ValueError(f'--manual_dir is required for {dataset}: the folder with its files '
                       f'(docs/{dataset}.md)')
    spec.check_manual_dir(manual_dir)
    return
  if not spec.archives:
    return
  if not manual_dir:
    raise ValueError(f'--manual_dir is required for {dataset}: the folder with '
                     f'{", ".join(spec.archives)}')
  missing = [a for a in spec.archives if not os.path.exists(os.path.join(manual_dir, a))]
  if missing:
    raise FileNotFoundError(f'Missing in {manual_dir}: {", ".join(missing)} (download them '
                            'manually; see README "Datasets")')
  for archive in spec.archives:
    path = os.path.join(manual_dir, archive)
    if not zipfile.is_zipfile(path):
      raise ValueError(f'{path} is not a zip archive (truncated download?)')


def prepare(dataset: str, *, manual_dir: str | None = None, data_dir: str | None = None,
            verify: bool = True) -> dict[str, int]:
  """Prepares `dataset`; returns the number of records per split."""
  check_archives(dataset, manual_dir)
  config = default.get_config()
  config.dataset.name = dataset
  config.dataset.data_dir = data_dir
  spec = datasets.get_spec(config)
  builder = spec.make_builder(config)
  if not builder.is_prepared():
    with datasets.preparing(builder):  # a second process waits, then finds it prepared
      builder = spec.make_builder(config)
      if not builder.is_prepared():
        builder.download_and_prepare(
            file_format='array_record',
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  sizes = {}
  for split in builder.info.splits:
    source = datasets.load_source(config, split)
    sizes[split] = len(source)
    if verify and split != 'test':  # Cityscapes' test labels are placeholders
      try:
        for i in tqdm.trange(len(source), desc=f'checking {dataset}/{split}', mininterval=2,
                             disable=None):  # a bar on a terminal only
          source[i]
      except datasets.DataError:
        logging.error('Removing %s: it holds a bad record.', builder.data_dir)
        shutil.rmtree(builder.data_dir, ignore_errors=True)
        raise
  class_index_lib.load_class_index(datasets.load_source(config, config.dataset.train_split))
  return sizes


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  try:
    sizes = prepare(FLAGS.dataset, manual_dir=FLAGS.manual_dir, data_dir=FLAGS.data_dir,
                    verify=FLAGS.verify)
  except (ValueError, FileNotFoundError) as e:
    cli.exit_on(e)
  print(f'Prepared {FLAGS.dataset}: ' + ', '.join(f'{k} {v}' for k, v in sizes.items()))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
