"""Evaluation at ADE20k's scale conventions: compilations and images/s on many image sizes.

  python scripts/benchmark_eval.py [--images=64] [--width=16] [--quick]

ADE20k cannot be downloaded here, so the script writes a fake ADEChallengeData2016.zip whose
validation images have ADE20k-like shapes (mostly 4:3 and 3:4, some square, 3:2, 16:9 and
2:3; short sides spread over 0.75x-2x the evaluation's short side, all at 1/8 of ADE20k's
scale), prepares it through the real path, and evaluates a randomly initialised UPerNet of
`configs/ade20k_mcce.py` (a narrower ResNet-101, `--width`) with the config's protocol (short
side resized to 64, the 1/8-scale 512, scored at the original resolution), then with
sliding windows, and as the previous design did it (batches in record order, each padded to
its largest image). For each: the programs XLA compiled (JAX's compilation log),
the first pass's seconds (compiling included) and the images/s of a second pass.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from tce_jax import evaluator as evaluator_lib
from tce_jax import inference
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import prepare
from tce_jax.configs import ade20k_mcce
from tce_jax.data import class_index
from tce_jax.data import datasets
from tce_jax.data import fake_archives
from tce_jax.data import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_integer('images', 64, 'Fake validation images.')
flags.DEFINE_integer('width', 16, 'ResNet stem width of the UPerNet (64 = the real one).')
flags.DEFINE_string('backbone', 'resnet101', 'Backbone of the UPerNet.')
flags.DEFINE_integer('batch_size', 4, 'Evaluation batch.')
flags.DEFINE_bool('quick', False, 'Smoke version: 12 images, a ResNet-18 of width 8.')
flags.DEFINE_list('shapes', None, 'Instead: time the evaluation step of one batch on each of '
                  'these canvases (e.g. 64x96,85x114), median of 5, to compare shapes.')

# (aspect ratio w / h, frequency) of the fake validation images.
ASPECTS = ((4 / 3, 0.55), (3 / 4, 0.15), (1.0, 0.1), (3 / 2, 0.1), (16 / 9, 0.05), (2 / 3, 0.05))
EVAL_SIZE = (256, 64)  # ADE20k's (2048, 512) at 1/8 scale


def fake_sizes(num_images: int, seed: int = 0) -> list[tuple[int, int]]:
  rng = np.random.default_rng(seed)
  aspects = rng.choice([a for a, _ in ASPECTS], num_images, p=[p for _, p in ASPECTS])
  short = rng.integers(48, 129, num_images)
  return [(int(s), int(round(s * a))) if a >= 1 else (int(round(s / a)), int(s))
          for a, s in zip(aspects, short)]


class CompileLog(logging.Handler):
  """Counts JAX's "Compiling ..." log lines (jax.log_compiles)."""

  def __init__(self):
    super().__init__(logging.DEBUG)
    self.count = 0

  def emit(self, record):
    self.count += record.getMessage().startswith('Compiling ')


def per_batch_plan(source, config) -> list[pipeline.EvalBatch]:
  """The previous design: batches in record order, each padded to its largest image."""
  sizes = class_index.load_image_sizes(source, progress=False)
  exact = pipeline.eval_plan(sizes, 1, size=config.input.eval_size, resolution='original',
                             canvas_sides=config.eval.canvas_sides)
  canvas = {b.indices[0]: b.canvas for b in exact}
  plan, n, bs = [], len(source), config.input.eval_batch_size
  for start in range(0, n, bs):
    members = list(range(start, min(start + bs, n)))
    box = tuple(max(canvas[i][d] for i in members) for d in (0, 1))
    tiles = max(pipeline.label_tiles(*sizes[i], box) for i in members)
    plan.append(pipeline.EvalBatch(tuple(members) + (-1,) * (bs - len(members)), box, tiles))
  return plan


def measure(config, source, variables, plan=None) -> dict:
  evaluator = evaluator_lib.Evaluator(config, source, datasets.get_spec(config).class_names,
                                      mesh_lib.make_mesh(), progress=False)
  evaluator._plan = plan  # pylint: disable=protected-access
  evaluator.plan  # the image sizes (cached next to the dataset): not timed  # pylint: disable=pointless-statement
  handler = CompileLog()
  logging.getLogger('jax').addHandler(handler)
  try:
    with jax.log_compiles(True):
      start = time.perf_counter()
      first = evaluator(variables)
      first_s = time.perf_counter() - start
      start = time.perf_counter()
      second = evaluator(variables)
      second_s = time.perf_counter() - start
  finally:
    logging.getLogger('jax').removeHandler(handler)
  assert (first == second).all()
  return {'canvases': len(evaluator.canvases), 'programs': handler.count,
          'first_s': first_s, 'images_per_s': len(source) / second_s,
          'miou_check': float(np.trace(first) / max(first.sum(), 1))}


def time_shapes(config, variables, shapes) -> None:
  """The evaluation step (model, argmax, confusion) of one batch per canvas shape."""
  model = models.create_model(config, 150, train=False,
                              output_stride=config.model.eval_output_stride)
  step = jax.jit(lambda v, b: evaluator_lib.evaluation.confusion_matrix(
      jax.numpy.argmax(inference.predict(model, v, b['image'], b['size']), -1),
      b['label'], 150))
  n = FLAGS.batch_size
  print(f'\nEvaluation step per canvas: UPerNet {config.model.backbone} width '
        f'{config.model.width}, output stride {config.model.eval_output_stride}, batch {n}')
  print('| canvas | ms / batch | images/s | kpixels/s |')
  print('|---|---|---|---|')
  for shape in shapes:
    h, w = (int(v) for v in shape.split('x'))
    batch = {'image': np.zeros((n, h, w, 3), np.uint8), 'size': np.array([[h, w]] * n),
             'label': np.zeros((n, h, w), np.uint8)}
    step(variables, batch).block_until_ready()
    times = []
    for _ in range(5):
      start = time.perf_counter()
      step(variables, batch).block_until_ready()
      times.append(time.perf_counter() - start)
    t = float(np.median(times))
    print(f'| {h} x {w} | {1e3 * t:.0f} | {n / t:.1f} | {n * h * w / t / 1e3:.0f} |')


def main(argv):
  del argv
  num_images, width, backbone = FLAGS.images, FLAGS.width, FLAGS.backbone
  if FLAGS.quick:
    num_images, width, backbone = 12, 8, 'resnet18'
  if FLAGS.shapes:
    config = ade20k_mcce.get_config()
    config.update_from_flattened_dict({'model.backbone': backbone, 'model.width': width})
    model = models.create_model(config, 150, train=True)
    full = models.init_variables(config, model, jax.random.PRNGKey(0))
    time_shapes(config, {'params': full['params'], 'batch_stats': full['batch_stats']},
                FLAGS.shapes)
    return
  sizes = fake_sizes(num_images)
  with tempfile.TemporaryDirectory() as tmp:
    fake_archives.make_ade20k_archive(tmp, training_sizes=sizes[:2], validation_sizes=sizes,
                                      pattern='blocks')
    prepare.prepare('ade20k', manual_dir=tmp, data_dir=os.path.join(tmp, 'tfds'), verify=False)
    config = ade20k_mcce.get_config()
    config.update_from_flattened_dict({
        'dataset.data_dir': os.path.join(tmp, 'tfds'), 'model.backbone': backbone,
        'model.width': width, 'input.eval_size': EVAL_SIZE,
        'input.eval_batch_size': FLAGS.batch_size, 'input.num_threads': 2})
    source = datasets.load_source(config, 'validation')
    class_index.load_image_sizes(source, progress=False)
    model = models.create_model(config, datasets.get_spec(config).num_classes, train=True)
    full = models.init_variables(config, model, jax.random.PRNGKey(0))
    variables = {'params': full['params'], 'batch_stats': full['batch_stats']}
    largest = max(max(s) for s in sizes) * 4
    settings = [
        ('whole, original resolution (the config)', {}),
        ('whole, resized labels', {'eval.resolution': 'resized'}),
        ('slide 64 x 64, stride 43 (original)', {'eval.mode': 'slide', 'eval.window': (64, 64),
                                                 'eval.stride': (43, 43)}),
        ('each batch padded to its largest image (the previous design)', 'per_batch'),
    ]
    rows = []
    for name, overrides in settings:
      setting = config.copy_and_resolve_references()
      plan = None
      if overrides == 'per_batch':
        setting.eval.canvas_sides = tuple(range(1, largest))  # every side is a canvas side
        plan = per_batch_plan(source, setting)
      else:
        setting.update_from_flattened_dict(overrides)
      rows.append((name, measure(setting, source, variables, plan)))
  distinct = len(set(sizes))
  print(f'\nADE20k-shaped fake validation set: {num_images} images, {distinct} distinct sizes '
        f'(short side 48-128, resized to {EVAL_SIZE[1]}); UPerNet {backbone} width {width}, '
        f'batch {FLAGS.batch_size}, {jax.device_count()} {jax.devices()[0].platform} '
        f'device(s), {os.cpu_count()} cores')
  print('| evaluation | canvases | programs compiled | first pass (s) | images/s (2nd pass) |')
  print('|---|---|---|---|---|')
  for name, r in rows:
    print(f'| {name} | {r["canvases"]} | {r["programs"]} | {r["first_s"]:.1f} | '
          f'{r["images_per_s"]:.1f} |')


if __name__ == '__main__':
  app.run(main)
