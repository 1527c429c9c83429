"""tfds builder of the ADE20k SceneParsing benchmark (150 classes) from ADEChallengeData2016.zip.

tfds' `scene_parse150` downloads the 2017 instance annotations, not the 150-class maps of
the benchmark; this builder reads the official archive (manual download) instead:
ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*_XXXXXXXX.{jpg,png},
20,210 training and 2,000 validation images. Labels are stored as in the archive (0 = other,
1..150 = classes) and mapped to train ids by `tce_jax.data.datasets`. Every pair is checked
while preparing: an unreadable image, a label map of another size, or an id above 150 stops
preparation naming the file, and tfds leaves no complete-looking dataset behind.
"""

from __future__ import annotations

import io
import os
import zipfile

import tensorflow_datasets as tfds

from tce_jax.data import pairs

ARCHIVE = 'ADEChallengeData2016.zip'
ROOT = 'ADEChallengeData2016'
NUM_STORED_IDS = 151  # 0 = other, 1..150


PreparationError = pairs.PreparationError


def _check_pair(archive: str, image_name: str, image_bytes: bytes, label_name: str,
                label_bytes: bytes) -> bytes:
  """Returns the image as RGB JPEG/PNG bytes, after checking the pair; raises naming the file."""
  image = pairs.check_pair(f'{archive}:{image_name}', image_bytes, f'{archive}:{label_name}',
                           label_bytes, num_ids=NUM_STORED_IDS, dataset='ADE20k')
  if image.mode != 'RGB':  # a few ADE images are greyscale or CMYK
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, format='PNG')
    return buffer.getvalue()
  return image_bytes


class Ade20kSceneParsing(tfds.core.GeneratorBasedBuilder):
  """The 150-class ADE20k scene parsing benchmark (MIT Scene Parsing Challenge 2016)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'From ADEChallengeData2016.zip.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Download {ARCHIVE} (from the website of the MIT Scene Parsing benchmark, "Data" '
      'section, about 923 MB) and place it in manual_dir.')

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='ADE20k SceneParsing: 150 classes; label 0 = other (ignored).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3)),
            'segmentation_label': tfds.features.Image(shape=(None, None, 1),
                                                      encoding_format='png'),
            'image_id': tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager):
    path = os.path.join(dl_manager.manual_dir, ARCHIVE)
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path} is missing. {self.MANUAL_DOWNLOAD_INSTRUCTIONS}')
    return {'train': self._generate_examples(path, 'training'),
            'validation': self._generate_examples(path, 'validation')}

  def _generate_examples(self, path: str, subset: str):
    with zipfile.ZipFile(path) as archive:
      names = set(archive.namelist())
      images = sorted(n for n in names if n.startswith(f'{ROOT}/images/{subset}/')
                      and n.endswith('.jpg'))
      if not images:
        raise PreparationError(f'{path} has no {ROOT}/images/{subset}/*.jpg: not the '
                               'ADEChallengeData2016 archive?')
      for image_name in images:
        stem = os.path.basename(image_name)[:-4]
        label_name = f'{ROOT}/annotations/{subset}/{stem}.png'
        if label_name not in names:
          raise PreparationError(f'{path}: {image_name} has no label map {label_name}')
        label_bytes = archive.read(label_name)
        image_bytes = _check_pair(path, image_name, archive.read(image_name), label_name,
                                  label_bytes)
        yield stem, {'image': image_bytes, 'segmentation_label': label_bytes,
                     'image_id': stem}
