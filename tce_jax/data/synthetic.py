"""tfds builder of the built-in synthetic street-scene dataset (no download, seeded)."""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from tce_jax.data.synthetic_scenes import PROFILES, render_scene

_DESCRIPTION = """Procedural street scenes labelled with Cityscapes' 19 classes: a long-tailed
class distribution (rare trains, riders, motorcycles; thin poles; small signs and lights),
confusable class pairs and ignored ego-vehicle pixels. Generated locally from a seed."""

_SPLIT_IDS = {'train': 0, 'validation': 1}


class SyntheticStreetsConfig(tfds.core.BuilderConfig):
  """Sizes and seed of one synthetic dataset; the name encodes them, so copies never clash."""

  def __init__(self, *, num_train: int = 2000, num_validation: int = 300, height: int = 128,
               width: int = 256, seed: int = 0, profile: str = 'v1'):
    if profile not in PROFILES:
      raise ValueError(f'config.dataset.synthetic.profile={profile!r}: must be one of '
                       f'{PROFILES}')
    name = f'n{num_train}_v{num_validation}_{height}x{width}_seed{seed}'
    if profile != 'v1':  # v1's names predate profiles: its prepared copies stay valid
      name += f'_{profile}'
    super().__init__(name=name, description=f'{num_train} train / {num_validation} validation '
                     f'images of {height}x{width}, seed {seed}, profile {profile}')
    self.num_train, self.num_validation = num_train, num_validation
    self.height, self.width, self.seed, self.profile = height, width, seed, profile


def encode_png(array: np.ndarray) -> bytes:
  """PNG bytes of a uint8 image ([H, W, 3]) or label map ([H, W]); needs no TensorFlow."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


class SyntheticStreets(tfds.core.GeneratorBasedBuilder):
  """Street-like scenes whose class imbalance reproduces the problem TCE addresses."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [SyntheticStreetsConfig()]

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(c.height, c.width, 3), encoding_format='png'),
            'segmentation_label': tfds.features.Image(shape=(c.height, c.width, 1),
                                                      encoding_format='png'),
            'image_id': np.int64,
        }),
        supervised_keys=('image', 'segmentation_label'),
    )

  def _split_generators(self, dl_manager):
    c = self.builder_config
    return {'train': self._generate_examples('train', c.num_train),
            'validation': self._generate_examples('validation', c.num_validation)}

  def _generate_examples(self, split: str, num_examples: int):
    c = self.builder_config
    for i in range(num_examples):
      rng = np.random.default_rng([c.seed, _SPLIT_IDS[split], i])
      image, label = render_scene(rng, c.height, c.width, c.profile)
      yield i, {'image': encode_png(image), 'segmentation_label': encode_png(label),
                'image_id': i}
