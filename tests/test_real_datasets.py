"""Cityscapes and ADE20k through the real preparation path, on tiny fake archives laid out
like the official ones (same folders and file names). Nothing is downloaded."""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from tce_jax import config_validation
from tce_jax import prepare
from tce_jax import report
from tce_jax import train
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data.ade20k import PreparationError
from tce_jax.data.fake_archives import make_ade20k_archive
from tce_jax.data.fake_archives import make_cityscapes_archives

from conftest import ROOT, subprocess_env

@pytest.fixture(scope='module')
def cityscapes_dirs(tmp_path_factory):
  manual = tmp_path_factory.mktemp('cityscapes_manual')
  make_cityscapes_archives(str(manual))
  data_dir = str(tmp_path_factory.mktemp('cityscapes_tfds'))
  sizes = prepare.prepare('cityscapes', manual_dir=str(manual), data_dir=data_dir)
  return data_dir, sizes


@pytest.fixture(scope='module')
def ade20k_dirs(tmp_path_factory):
  manual = tmp_path_factory.mktemp('ade_manual')
  make_ade20k_archive(str(manual))
  data_dir = str(tmp_path_factory.mktemp('ade_tfds'))
  sizes = prepare.prepare('ade20k', manual_dir=str(manual), data_dir=data_dir)
  return data_dir, sizes


def config_for(name, data_dir):
  """`name` at the test dry run's tiny sizes (scripts/reproduce.py): 2 steps on a ResNet-18."""
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from reproduce import dry_run_overrides  # pylint: disable=g-import-not-at-top
  base = importlib.import_module(f'configs.{name}').get_config()
  base.dataset.data_dir = data_dir
  return tiny_config(base, dry_run_overrides(name.split('_')[0], width=8,
                                                 backbone='resnet18'))


def test_cityscapes_splits_and_label_mapping(cityscapes_dirs):
  data_dir, sizes = cityscapes_dirs
  assert sizes == {'train': 4, 'validation': 2, 'test': 2}
  config = config_for('cityscapes_mcce', data_dir)
  source = datasets.load_source(config, 'train')
  record = source[0]
  assert record['image'].shape == (1024, 2048, 3)
  label = record['label']
  assert set(np.unique(label)) == {0, 2, 10, 11, 13, 255}  # road building sky person car ign
  assert label[950, 5] == 255 and label[5, 5] == 255  # ego vehicle, unlabeled
  index = class_index_lib.load_class_index(source, progress=False)
  assert list(index.image_counts[[0, 13]]) == [4, 4] and index.image_counts[16] == 0


def test_ade20k_splits_and_label_mapping(ade20k_dirs):
  data_dir, sizes = ade20k_dirs
  assert sizes == {'train': 3, 'validation': 2}
  config = config_for('ade20k_mcce', data_dir)
  source = datasets.load_source(config, 'validation')
  shapes = sorted(source[i]['label'].shape for i in range(2))
  assert shapes == [(96, 128), (120, 90)]
  labels = np.concatenate([source[i]['label'].ravel() for i in range(2)])
  assert set(np.unique(labels)) == {0, 3, 149, 255}


REAL_CONFIGS = ['cityscapes_mcce', 'cityscapes_focal', 'cityscapes_tce', 'ade20k_mcce',
                'ade20k_focal', 'ade20k_tce']


@pytest.mark.parametrize('name', REAL_CONFIGS)
def test_real_configs_require_imagenet_weights(name, tmp_path):
  config = importlib.import_module(f'configs.{name}').get_config()
  with pytest.raises(ValueError, match=r'^config\.model\.pretrained is not set') as error:
    config_validation.validate_config(config, num_devices=1)
  message = str(error.value)
  assert f'{name} starts from ImageNet weights' in message
  assert ('python scripts/convert_resnet.py --input=resnet101.safetensors --depth=resnet101 '
          '--output=weights/resnet101_imagenet') in message
  assert '--config.model.pretrained=weights/resnet101_imagenet' in message
  assert '--config.model.pretrained=none' in message
  config.model.pretrained = 'none'  # from scratch, on purpose
  config_validation.validate_config(config, num_devices=1)
  config.model.pretrained = str(tmp_path / 'missing')
  with pytest.raises(ValueError, match=r"pretrained='.*missing' does not exist. Make it with "
                                       'python scripts/convert_resnet.py'):
    config_validation.validate_config(config, num_devices=1)


def test_main_without_weights_stops_before_building_anything(tmp_path):
  workdir = tmp_path / 'run'
  result = subprocess.run([sys.executable, '-m', 'tce_jax.main',
                           '--config=configs/cityscapes_tce.py', f'--workdir={workdir}'],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      'Error: config.model.pretrained is not set, and cityscapes_tce starts from ImageNet')
  assert not workdir.exists()  # nothing written, nothing compiled


def test_training_from_scratch_on_purpose_is_recorded(cityscapes_dirs, tmp_path):
  """pretrained=none: the run trains, config.json keeps 'none', the log and the report say
  'from scratch'."""
  config = config_for('cityscapes_mcce', cityscapes_dirs[0])
  config.model.pretrained = 'none'
  workdir = tmp_path / 'scratch'
  record = train.train_and_evaluate(config, str(workdir))
  assert record['step'] == 2 and len(record['per_class_iou']) == 19
  with open(workdir / 'config.json') as f:
    assert json.load(f)['model']['pretrained'] == 'none'
  out = tmp_path / 'report'
  report.make_report([str(workdir)], str(out), qualitative_images=0)
  text = (out / 'report.md').read_text()
  assert 'backbone from scratch (pretrained=none)' in text


def test_missing_and_broken_archives_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match='gtFine_trainvaltest.zip'):
    (tmp_path / 'leftImg8bit_trainvaltest.zip').write_bytes(b'')
    prepare.check_archives('cityscapes', str(tmp_path))
  (tmp_path / 'gtFine_trainvaltest.zip').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='is not a zip archive'):
    prepare.check_archives('cityscapes', str(tmp_path))
  with pytest.raises(ValueError, match='--manual_dir is required'):
    prepare.check_archives('ade20k', None)


def test_unknown_cityscapes_label_id_stops_preparation(tmp_path):
  make_cityscapes_archives(str(tmp_path), bad_id=40)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(datasets.DataError, match=r'Unknown label ids \[40\].*image aachen_'):
    prepare.prepare('cityscapes', manual_dir=str(tmp_path), data_dir=str(data_dir))
  config = config_for('cityscapes_mcce', str(data_dir))
  assert not datasets.get_spec(config).make_builder(config).is_prepared()


@pytest.mark.parametrize('problem,message', [
    ('bad_label', r'ADE_train_00000002.png holds label id 200'),
    ('mismatch', r'ADE_val_00000001.png is 128x94 but its image .* is 128x96'),
])
def test_bad_ade20k_files_stop_preparation(tmp_path, problem, message):
  make_ade20k_archive(str(tmp_path), **{problem: True})
  data_dir = tmp_path / 'tfds'
  with pytest.raises(PreparationError, match=message):
    prepare.prepare('ade20k', manual_dir=str(tmp_path), data_dir=str(data_dir))
  config = config_for('ade20k_mcce', str(data_dir))
  assert not datasets.get_spec(config).make_builder(config).is_prepared()
