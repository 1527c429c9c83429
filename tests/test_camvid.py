"""CamVid through the real preparation path, on fake folders in the SegNet layout written by
`fake_archives.make_camvid_folder` (same folders, lists and label encoding; tiny images)."""

import json

import numpy as np
import pytest

from tce_jax import evaluate
from tce_jax import prepare
from tce_jax import train
from tce_jax.configs import camvid_mcce
from tce_jax.data import camvid
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import classes
from tce_jax.data import datasets
from tce_jax.data.fake_archives import make_camvid_folder

SIZE = (48, 64)  # fake images (CamVid's are 360 x 480)


@pytest.fixture(scope='module')
def camvid_dirs(tmp_path_factory):
  manual = tmp_path_factory.mktemp('camvid_manual')
  make_camvid_folder(str(manual), size=SIZE)
  data_dir = str(tmp_path_factory.mktemp('camvid_tfds'))
  sizes = prepare.prepare('camvid', manual_dir=str(manual), data_dir=data_dir)
  return data_dir, sizes


def tiny_camvid_config(data_dir):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  from reproduce import dry_run_overrides  # pylint: disable=g-import-not-at-top
  overrides = dry_run_overrides('camvid', width=8, backbone='resnet18')
  overrides['input.crop_size'] = (32, 32)
  config = camvid_mcce.get_config()
  config.dataset.data_dir = data_dir
  return tiny_config(config, overrides)


def test_splits_labels_and_class_index(camvid_dirs):
  data_dir, sizes = camvid_dirs
  assert sizes == {'train': 4, 'validation': 2, 'test': 2}
  config = tiny_camvid_config(data_dir)
  assert config.dataset.eval_split == 'test' and config.model.pretrained == 'none'
  source = datasets.load_source(config, 'test')
  record = source[0]
  assert record['image'].shape == SIZE + (3,)
  assert set(np.unique(record['label'])) == {0, 1, 2, 3, 4, 8, 9, 255}  # void -> ignore
  index = class_index_lib.load_class_index(datasets.load_source(config, 'train'),
                                           progress=False)
  assert list(index.image_counts[[0, 2, 8, 9]]) == [4, 4, 4, 4]
  assert index.image_counts[10] == 0  # no bicyclist in the fake frames
  assert len(datasets.get_spec(config).class_names) == 11
  assert classes.class_tag('sign/symbol') == 'sign_symbol'


def test_zip_and_the_folder_itself_are_accepted(tmp_path):
  make_camvid_folder(str(tmp_path / 'zipped'), size=SIZE, zipped=True)
  assert camvid.locate(str(tmp_path / 'zipped')).member_prefix == 'CamVid/'
  root = make_camvid_folder(str(tmp_path / 'plain'), size=SIZE)
  assert camvid.locate(root).root == root  # --manual_dir=.../CamVid
  data_dir = tmp_path / 'tfds'
  sizes = prepare.prepare('camvid', manual_dir=str(tmp_path / 'zipped'), data_dir=str(data_dir))
  assert sizes == {'train': 4, 'validation': 2, 'test': 2}


@pytest.mark.parametrize('problem,message', [
    ('bad_label', r'trainannot/0001TP_000001.png holds label id 12; CamVid ids are 0..11'),
    ('mismatch', r'valannot/0001TP_000000.png is 64x46 but its image .* is 64x48'),
    ('unreadable', r'test/Seq05VD_f00000.png is not a readable image'),
    ('missing', r'trainannot/0001TP_000000.png is listed in train.txt but missing'),
])
def test_bad_files_stop_preparation_naming_them(tmp_path, problem, message):
  make_camvid_folder(str(tmp_path), size=SIZE, problem=problem)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(camvid.PreparationError, match=message):
    prepare.prepare('camvid', manual_dir=str(tmp_path), data_dir=str(data_dir))
  config = tiny_camvid_config(str(data_dir))
  assert not datasets.get_spec(config).make_builder(config).is_prepared()


def test_another_layout_is_named(tmp_path):
  (tmp_path / 'LabeledApproved_full').mkdir()
  (tmp_path / 'LabeledApproved_full' / '0001TP_006690_L.png').write_bytes(b'')
  with pytest.raises(camvid.PreparationError, match=r'32-class colour-coded .* this dataset '
                                                   r'reads the 11-class SegNet layout'):
    prepare.check_archives('camvid', str(tmp_path))
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='CamVid is not in .*expected the 11-class'):
    prepare.check_archives('camvid', str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match='--manual_dir is required for camvid'):
    prepare.check_archives('camvid', None)


def test_tiny_train_and_evaluate_on_test(camvid_dirs, tmp_path):
  config = tiny_camvid_config(camvid_dirs[0])
  workdir = tmp_path / 'run'
  record = train.train_and_evaluate(config, str(workdir))
  assert record['step'] == 2 and record['split'] == 'test'
  assert list(record['per_class_iou']) == list(classes.CAMVID_CLASSES)
  with open(workdir / 'eval' / '2.json') as f:
    saved = json.load(f)
  matrix = np.asarray(saved['confusion_matrix'])
  valid = sum(int((datasets.load_source(config, 'test')[i]['label'] != 255).sum())
              for i in range(2))
  assert matrix.shape == (11, 11) and matrix.sum() == valid  # every valid pixel, full size
  again = evaluate.evaluate_run(str(workdir), split='validation')
  assert again['split'] == 'validation'
