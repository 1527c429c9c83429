"""Evaluation at the real benchmarks' conventions: images of many sizes on a few canvases
(bounded compilation), scoring at the original resolution, and sliding-window inference,
each checked against an independent numpy reference."""

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tce_jax import evaluation
from tce_jax import evaluator as evaluator_lib
from tce_jax import inference
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import prepare
from tce_jax.configs import ade20k_mcce
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data import imagenet
from tce_jax.data import pipeline
from tce_jax.data.fake_archives import make_ade20k_archive

# ADE20k-like validation images: 4:3 / 3:4 and nearby aspect ratios at many sizes (14 distinct).
VAL_SIZES = [(48, 64), (60, 80), (72, 96), (66, 88), (40, 50), (50, 70), (56, 84), (63, 81),
             (45, 60), (64, 48), (80, 60), (96, 72), (70, 56), (81, 63)]


@pytest.fixture(scope='module')
def ade_config(tmp_path_factory):
  manual = tmp_path_factory.mktemp('ade_sizes_manual')
  make_ade20k_archive(manual, training_sizes=[(48, 64), (64, 48)], validation_sizes=VAL_SIZES)
  data_dir = str(tmp_path_factory.mktemp('ade_sizes_tfds'))
  prepare.prepare('ade20k', manual_dir=str(manual), data_dir=data_dir)
  config = ade20k_mcce.get_config()
  config.update_from_flattened_dict({
      'dataset.data_dir': data_dir, 'model.backbone': 'resnet18', 'model.width': 8,
      'model.upernet_channels': 16, 'model.aux_channels': 8, 'input.eval_batch_size': 4,
      'input.num_threads': 1, 'input.eval_size': (256, 32)})
  return config


@functools.lru_cache(maxsize=None)
def _variables(config_json: str, seed: int = 0):
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(__import__('json').loads(config_json))
  num_classes = datasets.get_spec(config).num_classes
  model = models.create_model(config, num_classes, train=True)
  variables = models.init_variables(config, model, jax.random.PRNGKey(seed))
  return {'params': variables['params'], 'batch_stats': variables['batch_stats']}


def variables_for(config):
  return _variables(config.to_json())


def eval_model(config):
  return models.create_model(config, datasets.get_spec(config).num_classes, train=False,
                             output_stride=config.model.eval_output_stride)


def jit_predict(model, **kwargs):
  return jax.jit(functools.partial(inference.predict, model, **kwargs))


resize = jax.jit(inference.resize_bilinear, static_argnums=1)


# ---------------------------------------------------------------------------------------
# Interpolation and windows against numpy references.

def bilinear_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """float64 bilinear resize, align_corners=False, no antialias (torch / mmsegmentation)."""
  x = np.asarray(x, np.float64)
  in_h, in_w = x.shape[:2]

  def taps(n_in, n_out):
    result = []
    for i in range(n_out):
      src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
      i0 = min(int(np.floor(src)), n_in - 1)
      i1 = min(i0 + 1, n_in - 1)
      result.append((i0, i1, min(max(src - i0, 0.0), 1.0)))
    return result

  rows = np.stack([x[i0] * (1 - f) + x[i1] * f for i0, i1, f in taps(in_h, out_h)])
  return np.stack([rows[:, i0] * (1 - f) + rows[:, i1] * f for i0, i1, f in taps(in_w, out_w)],
                  axis=1)


@pytest.mark.parametrize('size,new_size', [((5, 7), (13, 11)), ((13, 11), (5, 7)),
                                           ((9, 9), (9, 9)), ((4, 6), (17, 3)), ((1, 3), (4, 4))])
def test_resize_bilinear_matches_float64_reference(size, new_size):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(*size, 3))
  canvas = np.full((size[0] + 3, size[1] + 2, 3), 1e3)  # padding that must never be read
  canvas[:size[0], :size[1]] = x
  shape = (new_size[0] + 4, new_size[1] + 1)
  out = np.asarray(resize(jnp.asarray(canvas, jnp.float32), shape,
                                                 jnp.array(size), jnp.array(new_size)))
  reference = bilinear_reference(x, *new_size)
  np.testing.assert_allclose(out[:new_size[0], :new_size[1]], reference, atol=1e-5)
  assert not out[new_size[0]:].any() and not out[:, new_size[1]:].any()
  # Tile by tile (a large original label is scored in tiles of the canvas's shape).
  tile = (3, 4)
  tiles = np.zeros((-(-new_size[0] // tile[0]) * tile[0], -(-new_size[1] // tile[1]) * tile[1], 3))
  for y in range(0, new_size[0], tile[0]):
    for x0 in range(0, new_size[1], tile[1]):
      tiles[y:y + tile[0], x0:x0 + tile[1]] = resize(
          jnp.asarray(canvas, jnp.float32), tile, jnp.array(size), jnp.array(new_size),
          jnp.array([y, x0]))
  np.testing.assert_allclose(tiles[:new_size[0], :new_size[1]], reference, atol=1e-5)


def mmseg_windows(size, window, stride):
  """mmsegmentation's slide_inference window placement, written out as it is there."""
  h_img, w_img = size
  h_crop, w_crop = window
  h_stride, w_stride = stride
  h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
  w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
  for h_idx in range(h_grids):
    for w_idx in range(w_grids):
      y1, x1 = h_idx * h_stride, w_idx * w_stride
      y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
      y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
      yield y1, y2, x1, x2


def test_slide_inference_averages_overlapping_windows(make_tiny_config):
  config = make_tiny_config()
  model = eval_model(config)
  variables = variables_for(config)
  rng = np.random.default_rng(1)
  canvas = (40, 72)
  sizes = np.array([[40, 72], [33, 50]], np.int32)  # the second image is smaller than its canvas
  images = rng.integers(0, 255, (2, *canvas, 3), dtype=np.uint8)
  window, stride = (24, 32), (16, 20)
  slide = np.asarray(jit_predict(model, mode='slide', window=window, stride=stride)(
      variables, jnp.asarray(images), jnp.asarray(sizes)))
  apply = jax.jit(lambda crop: model.apply(variables, crop, train=False))
  x = (images.astype(np.float32) - imagenet.IMAGENET_MEAN) / imagenet.IMAGENET_STD
  for b, (h, w) in enumerate(sizes):
    x[b, h:], x[b, :, w:] = 0, 0  # the padding is zero after normalisation
    total = np.zeros((*canvas, 19))
    count = np.zeros((*canvas, 1))
    for y1, y2, x1, x2 in mmseg_windows((h, w), window, stride):
      crop = x[b, y1:y1 + window[0], x1:x1 + window[1]]
      logits = np.asarray(apply(jnp.asarray(crop[None])))[0]
      total[y1:y1 + window[0], x1:x1 + window[1]] += logits
      count[y1:y1 + window[0], x1:x1 + window[1]] += 1
    reference = (total / np.maximum(count, 1))[:h, :w]
    np.testing.assert_allclose(slide[b, :h, :w], reference, atol=1e-4, rtol=1e-4)


def test_one_window_covering_the_image_is_whole_image_inference(make_tiny_config):
  config = make_tiny_config()
  model = eval_model(config)
  variables = variables_for(config)
  images = jnp.asarray(np.random.default_rng(2).integers(0, 255, (2, 32, 48, 3), np.uint8))
  sizes = jnp.array([[32, 48], [30, 41]])
  whole = jit_predict(model, flip=True)(variables, images, sizes)
  slide = jit_predict(model, flip=True, mode='slide', window=(32, 48),
                      stride=(16, 16))(variables, images, sizes)
  np.testing.assert_allclose(np.asarray(slide), np.asarray(whole), atol=1e-6)


def test_padding_is_never_read(make_tiny_config):
  """Whatever the padding pixels hold, an image's prediction (multi-scale, flip) is the same:
  padding is zero after normalisation and rescaling / mirroring stay within the image."""
  config = make_tiny_config()
  model = eval_model(config)
  variables = variables_for(config)
  rng = np.random.default_rng(3)
  images = rng.integers(0, 255, (2, 32, 48, 3), dtype=np.uint8)
  sizes = np.array([[25, 37], [32, 40]], np.int32)
  other = images.copy()
  for b, (h, w) in enumerate(sizes):
    other[b, h:], other[b, :, w:] = 255, 255
    images[b, h:], images[b, :, w:] = 0, 0
  run = jit_predict(model, scales=(0.5, 1.5), flip=True)
  a = run(variables, jnp.asarray(images), jnp.asarray(sizes))
  b = run(variables, jnp.asarray(other), jnp.asarray(sizes))
  for i, (h, w) in enumerate(sizes):
    np.testing.assert_array_equal(np.asarray(a)[i, :h, :w], np.asarray(b)[i, :h, :w])


# ---------------------------------------------------------------------------------------
# A fake ADE20k with many image sizes, end to end.

class CompileLog(logging.Handler):
  """Collects JAX's "Compiling ..." log lines (jax.log_compiles)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.lines = []

  def emit(self, record):
    message = record.getMessage()
    if message.startswith('Compiling '):
      self.lines.append(message.split(' with ')[0])


def image_scores(evaluator, variables, plan, eval_size):
  """{record index: scores [h, w, K] at the input size} of the batches of `plan`."""
  out = {}
  for planned, batch in zip(plan, pipeline.eval_batches(evaluator.source, len(plan[0].indices),
                                                        plan=plan, size=eval_size)):
    result = np.asarray(evaluator._predict(variables, batch['image'], batch['size'])[0])  # pylint: disable=protected-access
    for j, i in enumerate(planned.indices):
      if i >= 0:
        h, w = batch['size'][j]
        out[i] = result[j, :h, :w]
  return out


@pytest.fixture(scope='module')
def ade_evaluation(ade_config):
  """The fake ADE20k's validation split evaluated twice ('original' resolution) with JAX's
  compilation log on, and each image's scores."""
  source = datasets.load_source(ade_config, 'validation')
  variables = variables_for(ade_config)
  evaluator = evaluator_lib.Evaluator(ade_config, source, datasets.get_spec(ade_config)
                                      .class_names, mesh_lib.make_mesh())
  handler = CompileLog()
  jax_logger = logging.getLogger('jax')
  jax_logger.addHandler(handler)
  try:
    with jax.log_compiles(True):
      result = evaluator.evaluate(variables)
      first = list(handler.lines)
      again = evaluator(variables)  # the second evaluation compiles nothing
  finally:
    jax_logger.removeHandler(handler)
  return dict(source=source, evaluator=evaluator, variables=variables,
              confusion=result.confusion, cross_entropy=result.cross_entropy,
              preview=result.preview, again=again, compiled=first, compiled_later=handler.lines[len(first):],
              scores=image_scores(evaluator, variables, evaluator.plan,
                                  ade_config.input.eval_size))


def test_many_sizes_compile_a_few_programs(ade_evaluation):
  source = ade_evaluation['source']
  sizes = class_index_lib.load_image_sizes(source, progress=False)
  assert len({tuple(s) for s in sizes.tolist()}) >= 10
  assert len(ade_evaluation['compiled']) <= 4, ade_evaluation['compiled']
  assert not ade_evaluation['compiled_later']
  np.testing.assert_array_equal(ade_evaluation['confusion'], ade_evaluation['again'])
  assert ade_evaluation['confusion'].dtype == np.int64


def test_original_resolution_scoring_matches_numpy_reference(ade_evaluation):
  """Each image's scores resized (float64) to its untouched label, argmax, confusion."""
  source = ade_evaluation['source']
  reference = np.zeros((150, 150), np.int64)
  for i, scores in ade_evaluation['scores'].items():
    label = source[i]['label']
    assert scores.shape[:2] != label.shape  # predicted at the short side 32, scored at the original
    prediction = bilinear_reference(scores, *label.shape).argmax(-1)
    valid = label != 255
    np.add.at(reference, (label[valid], prediction[valid]), 1)
  assert reference.sum() == sum(int((source[i]['label'] != 255).sum())
                                for i in range(len(source)))
  np.testing.assert_array_equal(ade_evaluation['confusion'], reference)


def test_validation_cross_entropy_matches_float64_reference(ade_evaluation):
  """The validation loss at the original resolution: each image's logits resized (float64) to
  its label, -log softmax of the label's class, averaged over the labelled pixels."""
  source = ade_evaluation['source']
  total, count = 0.0, 0
  for i, scores in ade_evaluation['scores'].items():
    label = source[i]['label']
    logits = bilinear_reference(scores, *label.shape)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    valid = label != 255
    total -= np.take_along_axis(log_p, np.where(valid, label, 0)[..., None], -1)[..., 0][valid].sum()
    count += int(valid.sum())
  assert count == ade_evaluation['confusion'].sum()
  np.testing.assert_allclose(ade_evaluation['cross_entropy'], total / count, rtol=1e-5)


def test_preview_shows_fixed_images_with_labels_and_predictions(ade_evaluation):
  """The TensorBoard preview: the first images of the first batch, each with its label at the
  input size and the argmax of its scores."""
  evaluator, preview = ade_evaluation['evaluator'], ade_evaluation['preview']
  first = [i for i in evaluator.plan[0].indices if i >= 0][:evaluator.config.eval.preview_images]
  assert len(preview) == len(first) == 3
  for i, (image, label, prediction) in zip(first, preview):
    scores = ade_evaluation['scores'][i]
    assert image.shape[:2] == label.shape == prediction.shape == scores.shape[:2]
    np.testing.assert_array_equal(prediction, scores.argmax(-1))
    record = source_record = evaluator.source[i]
    expected = pipeline.resize(record['image'], source_record['label'], pipeline.keep_ratio_scale(
        *record['label'].shape, evaluator.config.input.eval_size))
    np.testing.assert_array_equal(image, expected[0])
    np.testing.assert_array_equal(label, expected[1])
  grid = evaluator_lib.preview_grid(preview, evaluator.palette)
  assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
  h0, w0 = preview[0][0].shape[:2]
  np.testing.assert_array_equal(grid[:h0, :w0], preview[0][0])  # the image, top left
  width = max(p[0].shape[1] for p in preview)
  np.testing.assert_array_equal(  # its prediction, third panel, in the dataset's colours
      grid[:h0, 2 * (width + 4):2 * (width + 4) + w0], evaluator.palette[preview[0][2]])


@pytest.mark.parametrize('probabilities', [False, True])
def test_cross_entropy_sum_matches_float64_reference(probabilities):
  rng = np.random.default_rng(int(probabilities))
  logits = rng.normal(size=(2, 5, 6, 7)) * 3
  labels = rng.integers(0, 7, size=(2, 5, 6))
  labels[0, 0] = 255  # ignored
  labels[1, 1, :3] = 9  # outside the classes: ignored too
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  valid = labels < 7
  expected = -np.log(np.take_along_axis(p, np.where(valid, labels, 0)[..., None], -1)[..., 0])
  scores = p if probabilities else logits
  got = evaluation.cross_entropy_sum(jnp.asarray(scores, jnp.float32), jnp.asarray(labels), 7,
                                     probabilities=probabilities)
  np.testing.assert_allclose(float(got), expected[valid].sum(), rtol=1e-5)


def test_multiscale_flip_cross_entropy_averages_probabilities(make_tiny_config):
  """Resized-path evaluation with test-time augmentation: the loss is -log of the averaged
  class probabilities, over the split's labelled pixels (numpy float64 from `predict`)."""
  config = make_tiny_config({'eval.scales': (0.5, 1.0), 'eval.flip': True})
  source = datasets.load_source(config, config.dataset.eval_split)
  variables = variables_for(config)
  evaluator = evaluator_lib.Evaluator(config, source, datasets.get_spec(config).class_names,
                                      mesh_lib.make_mesh())
  result = evaluator.evaluate(variables)
  run = jit_predict(eval_model(config), scales=(0.5, 1.0), flip=True)
  total, count = 0.0, 0
  for i in range(len(source)):
    example = source[i]
    p = np.asarray(run(variables, jnp.asarray(example['image'][None])), np.float64)[0]
    valid = example['label'] != 255
    total -= np.log(np.take_along_axis(p, np.where(valid, example['label'], 0)[..., None],
                                       -1)[..., 0][valid]).sum()
    count += int(valid.sum())
  assert count == result.confusion.sum()
  np.testing.assert_allclose(result.cross_entropy, total / count, rtol=1e-4)


def test_prediction_does_not_depend_on_batch_mates(ade_evaluation):
  evaluator = ade_evaluation['evaluator']
  plan = evaluator.plan
  # The same canvases, each image batched with other companions.
  shuffled = []
  for canvas in dict.fromkeys(b.canvas for b in plan):
    members = [i for b in plan if b.canvas == canvas for i in b.indices if i >= 0][::-1]
    members = members[1:] + members[:1]
    for start in range(0, len(members), 4):
      chunk = tuple(members[start:start + 4])
      shuffled.append(pipeline.EvalBatch(chunk + (-1,) * (4 - len(chunk)), canvas, 1))
  a = ade_evaluation['scores']
  b = image_scores(evaluator, ade_evaluation['variables'], shuffled,
                   evaluator.config.input.eval_size)
  assert sorted(a) == sorted(b) == list(range(len(evaluator.source)))
  for i in a:
    np.testing.assert_allclose(a[i], b[i], atol=1e-5, rtol=1e-5)


def test_titled_preview_names_the_columns_and_the_classes_shown():
  from tce_jax import tensorboard_layout  # pylint: disable=g-import-not-at-top
  from tce_jax.data import classes  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (20, 30, 3), np.uint8)
  label = np.full((20, 30), 255, np.uint8)
  label[:10] = 0
  prediction = np.zeros((20, 30), np.uint8)
  prediction[5:, :5] = 11  # rider
  preview = [(image, label, prediction)]
  grid = evaluator_lib.preview_grid(preview, classes.CITYSCAPES_PALETTE)
  titled = tensorboard_layout.titled_preview(
      grid, evaluator_lib.preview_layout(preview)[1], np.concatenate([label, prediction]),
      list(classes.CITYSCAPES_CLASSES), classes.CITYSCAPES_PALETTE)
  np.testing.assert_array_equal(titled[16:16 + grid.shape[0]], grid)  # under the header
  assert titled.shape[0] > 16 + grid.shape[0] and titled.shape[1] == grid.shape[1]
  legend = titled[16 + grid.shape[0]:]
  for c in (0, 11):  # road's and rider's swatches; the ignore label has none
    assert np.all(legend == classes.CITYSCAPES_PALETTE[c], axis=-1).any(), c
  assert not np.all(legend == classes.CITYSCAPES_PALETTE[1], axis=-1).any()  # sidewalk absent
  assert (titled[:16] < 128).any()  # the header's text
