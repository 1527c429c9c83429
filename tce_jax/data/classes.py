"""Class names and colour palettes of the datasets (for metrics, reports and pictures)."""

from __future__ import annotations

import numpy as np

from tce_jax.labels import IGNORE_INDEX  # pylint: disable=unused-import  (re-exported)


def class_tag(name: str) -> str:
  """A class name as a TensorBoard tag component ('traffic light' -> 'traffic_light',
  'sign/symbol' -> 'sign_symbol': a slash would open a new level of tags)."""
  return name.replace(' ', '_').replace('/', '_')

# Cityscapes' 19 evaluation classes in train-id order, with the official colours
# (cityscapesScripts, labels.py).
CITYSCAPES_CLASSES: tuple[str, ...] = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
    'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
    'truck', 'bus', 'train', 'motorcycle', 'bicycle')

CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
    (0, 0, 230), (119, 11, 32)], dtype=np.uint8)

# Raw Cityscapes label ids (gtFine_labelIds) of the 19 train ids, in train-id order.
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def label_lut(train_id_of: dict[int, int]) -> np.ndarray:
  """uint8 lookup table [256]: stored label id -> train id, everything else 255 (ignore)."""
  lut = np.full(256, IGNORE_INDEX, np.uint8)
  for stored, train_id in train_id_of.items():
    lut[stored] = train_id
  return lut


CITYSCAPES_LABEL_MAP = label_lut({raw: i for i, raw in enumerate(CITYSCAPES_LABEL_IDS)})


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
  """Label map [H, W] -> RGB [H, W, 3] uint8; ignored pixels are black."""
  lut = np.zeros((256, 3), np.uint8)
  lut[:len(palette)] = palette
  return lut[label]


# ADE20k SceneParsing (ADEChallengeData2016): the 150 classes in label order (stored label
# c + 1; 0 = "other", ignored) and the benchmark's colours (as in mmsegmentation).
ADE20K_CLASSES: tuple[str, ...] = (
    'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane',
    'grass', 'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant',
    'curtain', 'chair', 'car', 'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror',
    'rug', 'field', 'armchair', 'seat', 'fence', 'desk', 'rock', 'wardrobe', 'lamp',
    'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator',
    'grandstand', 'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door',
    'stairway', 'river', 'bridge', 'bookcase', 'blind', 'coffee table', 'toilet', 'flower',
    'book', 'hill', 'bench', 'countertop', 'stove', 'palm', 'kitchen island', 'computer',
    'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus', 'towel', 'light',
    'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
    'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman',
    'bottle', 'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt',
    'canopy', 'washer', 'plaything', 'swimming pool', 'stool', 'barrel', 'basket',
    'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven', 'ball', 'food', 'step', 'tank',
    'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake', 'dishwasher', 'screen',
    'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray', 'ashcan',
    'fan', 'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator',
    'glass', 'clock', 'flag')

ADE20K_PALETTE = np.array([
    [120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
    [120, 120, 80], [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7],
    [224, 5, 255], [235, 255, 7], [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82],
    [143, 255, 140], [204, 255, 4], [255, 51, 7], [204, 70, 3], [0, 102, 200],
    [61, 230, 250], [255, 6, 51], [11, 102, 255], [255, 7, 71], [255, 9, 224], [9, 7, 230],
    [220, 220, 220], [255, 9, 92], [112, 9, 255], [8, 255, 214], [7, 255, 224],
    [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255], [224, 255, 8],
    [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20], [255, 8, 41],
    [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255],
    [140, 140, 140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0],
    [153, 255, 0], [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255],
    [11, 200, 200], [255, 82, 0], [0, 255, 245], [0, 61, 255], [0, 255, 112],
    [0, 255, 133], [255, 0, 0], [255, 163, 0], [255, 102, 0], [194, 255, 0], [0, 143, 255],
    [51, 255, 0], [0, 82, 255], [0, 255, 41], [0, 255, 173], [10, 0, 255], [173, 255, 0],
    [0, 255, 153], [255, 92, 0], [255, 0, 255], [255, 0, 245], [255, 0, 102],
    [255, 173, 0], [255, 0, 20], [255, 184, 184], [0, 31, 255], [0, 255, 61], [0, 71, 255],
    [255, 0, 204], [0, 255, 194], [0, 255, 82], [0, 10, 255], [0, 112, 255], [51, 0, 255],
    [0, 194, 255], [0, 122, 255], [0, 255, 163], [255, 153, 0], [0, 255, 10],
    [255, 112, 0], [143, 255, 0], [82, 0, 255], [163, 255, 0], [255, 235, 0],
    [8, 184, 170], [133, 0, 255], [0, 255, 92], [184, 0, 255], [255, 0, 31], [0, 184, 255],
    [0, 214, 255], [255, 0, 112], [92, 255, 0], [0, 224, 255], [112, 224, 255],
    [70, 184, 160], [163, 0, 255], [153, 0, 255], [71, 255, 0], [255, 0, 163],
    [255, 204, 0], [255, 0, 143], [0, 255, 235], [133, 255, 0], [255, 0, 235],
    [245, 0, 255], [255, 0, 122], [255, 245, 0], [10, 190, 212], [214, 255, 0],
    [0, 204, 255], [20, 0, 255], [255, 255, 0], [0, 153, 255], [0, 41, 255], [0, 255, 204],
    [41, 0, 255], [41, 255, 0], [173, 0, 255], [0, 245, 255], [71, 0, 255], [122, 0, 255],
    [0, 255, 184], [0, 92, 255], [184, 255, 0], [0, 133, 255], [255, 214, 0],
    [25, 194, 194], [102, 255, 0], [92, 0, 255]], dtype=np.uint8)

ADE20K_LABEL_MAP = label_lut({stored: stored - 1 for stored in range(1, 151)})

# CamVid's 11-class benchmark (the SegNet tutorial's split) in label order, with the colours of
# that benchmark's own visualisation; stored id 11 (void) is ignored.
CAMVID_CLASSES: tuple[str, ...] = (
    'sky', 'building', 'pole', 'road', 'pavement', 'tree', 'sign/symbol', 'fence', 'car',
    'pedestrian', 'bicyclist')

CAMVID_PALETTE = np.array([
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222),
    (128, 128, 0), (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0),
    (0, 128, 192)], dtype=np.uint8)

CAMVID_LABEL_MAP = label_lut({stored: stored for stored in range(11)})
