"""Evaluation of model variables on a split: inference, confusion matrix, records.

Images of many sizes are evaluated on a few fixed canvases (`pipeline.eval_plan`): each image
is padded to the canvas its own size selects, the padding is zero after normalisation and
never scored, so evaluation compiles one program per canvas in use whatever the number of
image sizes, and an image's prediction does not depend on the other images of its batch.

The inference on a batch of canvases (whole image or sliding windows; multi-scale and flip
averaging of probabilities) is `tce_jax.inference`; `eval_step` is the confusion matrix of a
global batch at the input size, `score_step` at each image's original size (the predictions
resized back with bilinear interpolation, as mmsegmentation scores ADE20k). Both run under
`jax.shard_map` over the batch. `Evaluator` loops over a split and writes eval/<step>.json
(with the protocol that made it) and TensorBoard scalars. It takes model variables ({'params', 'batch_stats'}), not a
training state, so evaluating a checkpoint needs only the model. The metrics themselves are
pure functions in `tce_jax.evaluation`.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import NamedTuple, Sequence

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import tqdm

from tce_jax import evaluation
from tce_jax import inference
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import records
from tce_jax import rundir
from tce_jax import tensorboard_layout
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import classes
from tce_jax.data import datasets
from tce_jax.data import pipeline

AXIS = mesh_lib.AXIS  # the mesh axis the batch is split over (as in training)
Variables = inference.Variables
Preview = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (image, label, prediction)
MODES = evaluation.MODES
RESOLUTIONS = evaluation.RESOLUTIONS
LOG_EVERY_S = 60.0  # progress lines in the log where no progress bar shows


def eval_step(variables: Variables, batch: dict[str, jax.Array], *, model, num_classes: int,
              axis_name: str = AXIS, **predict_kwargs) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A global batch scored at the input size: its int32 confusion matrix [K, K] and float32
  cross-entropy sum over the labelled pixels (this device's share, summed over devices), and
  the predictions [B, H, W] uint8 (batch-sharded; fetched only for the TensorBoard preview).
  One batch holds far fewer than 2^31 pixels; the split's totals are summed on the host."""
  scores = inference.predict(model, variables, batch['image'], batch['size'], **predict_kwargs)
  predictions = jnp.argmax(scores, -1)
  confusion = evaluation.confusion_matrix(predictions, batch['label'], num_classes)
  logits = inference.returns_logits(predict_kwargs.get('scales', (1.0,)),
                                    predict_kwargs.get('flip', False))
  loss = evaluation.cross_entropy_sum(scores, batch['label'], num_classes,
                                      probabilities=not logits)
  return (lax.psum(confusion, axis_name), lax.psum(loss, axis_name),
          predictions.astype(jnp.uint8))


def score_step(scores: jax.Array, sizes: jax.Array, labels: jax.Array, label_sizes: jax.Array,
               offsets: jax.Array, *, num_classes: int, probabilities: bool = False,
               axis_name: str = AXIS) -> tuple[jax.Array, jax.Array]:
  """The int32 confusion matrix [K, K] and float32 cross-entropy sum of one tile of each
  image's original label (`config.eval.resolution='original'`): each image's scores
  [H, W, K] (from `predict`: logits, or class probabilities with `probabilities`) are resized
  bilinearly from its input size to its label size, the tile at `offsets` (row, column) of
  that resized map is computed (tiles have the canvas's shape), and it is scored against
  labels [B, H, W]. One image at a time: a large image's scores take memory.

  A program apart from the model's, so that the model compiles once per canvas however many
  tiles a label needs; this one compiles in moments.
  """
  def one(args):
    score, size, label, label_size, offset = args
    resized = inference.resize_bilinear(score, label.shape, size, label_size, offset)
    return (evaluation.confusion_matrix(jnp.argmax(resized, -1), label, num_classes),
            evaluation.cross_entropy_sum(resized, label, num_classes,
                                         probabilities=probabilities))

  confusion, loss = lax.map(one, (scores, sizes, labels, label_sizes, offsets))
  return lax.psum(confusion.sum(0), axis_name), lax.psum(loss.sum(), axis_name)


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array, in batch order (what it passed to
  `jax.make_array_from_process_local_data`)."""
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


def preview_layout(examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   max_width: int = 1536) -> tuple[int, int]:
  """(subsampling step, panel width) of `preview_grid`: three panels of the widest image fit
  in `max_width` pixels."""
  width = max(e[0].shape[1] for e in examples)
  step = max(1, math.ceil(3 * width / max_width))
  return step, -(-width // step)


def preview_grid(examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 palette: np.ndarray, *, max_width: int = 1536) -> np.ndarray:
  """One RGB uint8 image of rows `image | ground truth | prediction` (label maps in the
  dataset's colours, ignored pixels black, a white gap between panels), subsampled to at most
  `max_width` pixels wide: what TensorBoard shows at each evaluation."""
  step, panel_width = preview_layout(examples, max_width)
  gap = 4
  rows = []
  for image, label, prediction in examples:
    panels = [image, classes.colorize(label, palette), classes.colorize(prediction, palette)]
    panels = [p[::step, ::step] for p in panels]
    row = np.full((panels[0].shape[0], 3 * panel_width + 2 * gap, 3), 255, np.uint8)
    for i, panel in enumerate(panels):
      x = i * (panel_width + gap)
      row[:, x:x + panel.shape[1]] = panel
    rows.append(row)
  grid = np.full((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), rows[0].shape[1], 3),
                 255, np.uint8)
  y = 0
  for row in rows:
    grid[y:y + row.shape[0]] = row
    y += row.shape[0] + gap
  return grid


# ---------------------------------------------------------------------------------------
# The split's evaluation.

def eval_batch_size(requested: int, num_devices: int) -> int:
  """The global evaluation batch: `requested` rounded up to a multiple of the devices (the
  padding images are ignore-labelled, so the result does not depend on it)."""
  return math.ceil(requested / num_devices) * num_devices


def protocol(config: ml_collections.ConfigDict, split: str) -> dict:
  """How an evaluation is made, as recorded in eval/<step>.json: the split, the output stride,
  the input resize, the resolution scored, whole-image or sliding-window inference, and the
  test-time augmentation."""
  slide = config.eval.mode == 'slide'
  return {
      'split': split,
      'output_stride': int(config.model.eval_output_stride),
      'eval_size': list(config.input.eval_size) if config.input.eval_size else None,
      'resolution': config.eval.resolution,
      'mode': config.eval.mode,
      'window': list(config.eval.window) if slide else None,
      'stride': list(config.eval.stride) if slide else None,
      'scales': [float(s) for s in config.eval.scales],
      'flip': bool(config.eval.flip),
  }


def protocol_tag(made: dict, default: dict) -> str:
  """A file-name tag for the ways protocol `made` differs from `default` (the run's own):
  '' when they agree, e.g. 'ms0.75-1-1.25_flip' or 'slide769x769-513x513_os8'. Evaluations
  under another protocol get their own record and never replace the run's own."""
  def number(v):
    return f'{v:g}'
  parts = []
  if made['scales'] != default['scales']:
    parts.append('ms' + '-'.join(number(v) for v in made['scales']))
  if made['flip'] != default['flip']:
    parts.append('flip' if made['flip'] else 'noflip')
  if (made['mode'], made['window'], made['stride']) != (default['mode'], default['window'],
                                                        default['stride']):
    parts.append('whole' if made['mode'] == 'whole' else
                 'slide{}x{}-{}x{}'.format(*made['window'], *made['stride']))
  if made['resolution'] != default['resolution']:
    parts.append(made['resolution'])
  if made['eval_size'] != default['eval_size']:
    parts.append('size' + ('full' if made['eval_size'] is None else
                           'x'.join(str(v) for v in made['eval_size'])))
  if made['output_stride'] != default['output_stride']:
    parts.append(f'os{made["output_stride"]}')
  return '_'.join(parts)


class Evaluation(NamedTuple):
  """What `Evaluator.evaluate` measures on a split."""
  confusion: np.ndarray  # int64 [K, K], rows = ground truth
  cross_entropy: float  # the validation loss: mean -log p(label) over the labelled pixels
  preview: Preview  # a few fixed images with their labels and predictions (process 0)


class Evaluator:
  """Evaluates model variables on a split; writes TensorBoard scalars and eval/<step>.json."""

  def __init__(self, config: ml_collections.ConfigDict, source: datasets.SegmentationSource,
               class_names: Sequence[str], mesh: jax.sharding.Mesh, *,
               progress: bool | None = None):
    self.config, self.source, self.class_names = config, source, tuple(class_names)
    self.mesh = mesh
    self.progress = progress  # None: a progress bar on a terminal only
    self.batch_size = eval_batch_size(config.input.eval_batch_size, mesh.size)
    if self.batch_size != config.input.eval_batch_size:
      logging.info('Evaluation batch %d rounded up to %d (a multiple of the %d devices).',
                   config.input.eval_batch_size, self.batch_size, mesh.size)
    # Scored at the original size only where the input is resized (else they are the same).
    original = config.eval.resolution == 'original' and config.input.eval_size is not None
    self.resolution = 'original' if original else 'resized'
    self._plan = None
    self.last_speed = (0, 0.0)  # (images, images/s) of the last evaluation
    self.canvases: set[tuple[int, int]] = set()  # the canvases evaluated so far
    model = models.create_model(config, len(class_names), train=False,
                                output_stride=config.model.eval_output_stride)
    predict_kwargs = dict(scales=tuple(config.eval.scales), flip=config.eval.flip,
                          mode=config.eval.mode,
                          window=tuple(config.eval.window) if config.eval.window else None,
                          stride=tuple(config.eval.stride) if config.eval.stride else None)
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))
    k = len(class_names)
    probabilities = not inference.returns_logits(predict_kwargs['scales'], predict_kwargs['flip'])
    self.palette = datasets.get_spec(config).palette
    # The one choice between the two ways of scoring: the programs, how a batch is scored
    # (`_score_batch`) and where the preview's label comes from (`_preview_label`).
    if original:
      def scores_and_predictions(v, images, sizes):
        scores = inference.predict(model, v, images, sizes, **predict_kwargs)
        return scores, jnp.argmax(scores, -1).astype(jnp.uint8)  # the latter for the preview
      self._predict = jax.jit(
          jax.shard_map(scores_and_predictions, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS)),
                        out_specs=(P(AXIS), P(AXIS)), check_vma=False),
          in_shardings=(replicated, batched, batched), out_shardings=(batched, batched))
      self._score = jax.jit(
          jax.shard_map(functools.partial(score_step, num_classes=k,
                                          probabilities=probabilities), mesh=mesh,
                        in_specs=(P(AXIS),) * 5, out_specs=(P(), P()), check_vma=False),
          in_shardings=(batched,) * 5)
      self._score_batch, self._preview_label = self._score_original, self._original_label
    else:
      self._score_batch, self._preview_label = self._score_resized, self._resized_label
      self._step = jax.jit(
          jax.shard_map(functools.partial(eval_step, model=model, num_classes=k,
                                          **predict_kwargs),
                        mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P(), P(AXIS)),
                        check_vma=False),
          in_shardings=(replicated, batched))

  @property
  def plan(self) -> list[pipeline.EvalBatch]:
    """The split's batches (from the image sizes, cached next to the dataset)."""
    if self._plan is None:
      sizes = class_index_lib.load_image_sizes(self.source, progress=False)
      self._plan = pipeline.eval_plan(
          sizes, self.batch_size, size=self.config.input.eval_size,
          resolution=self.resolution, canvas_sides=self.config.eval.canvas_sides)
    return self._plan

  def __call__(self, variables: Variables) -> np.ndarray:
    """The int64 confusion matrix [K, K] of the whole split."""
    return self.evaluate(variables).confusion

  def evaluate(self, variables: Variables) -> Evaluation:
    """The split's confusion matrix, validation loss and preview (`Evaluation`)."""
    sharding = NamedSharding(self.mesh, P(AXIS))
    plan = self.plan
    batches = pipeline.eval_batches(
        self.source, self.batch_size, process_index=jax.process_index(),
        process_count=jax.process_count(), size=self.config.input.eval_size,
        resolution=self.resolution, plan=plan,
        num_threads=self.config.input.num_threads)
    per_batch = []  # (int32 [K, K], float32) each, on the device; at most 2 batches in flight
    preview: Preview = []
    total_images = sum(b.num_images for b in plan)
    start = last_log = time.perf_counter()
    done = 0
    with tqdm.tqdm(total=total_images, unit='img', desc=f'evaluating {self.source.split}',
                   disable=jax.process_index() != 0 or (
                       None if self.progress is None else not self.progress),
                   mininterval=1.0, leave=False) as bar:
      for planned, batch in zip(plan, pipeline.prefetch_iterator(batches)):
        def to_device(x):
          return jax.make_array_from_process_local_data(sharding, x)
        self.canvases.add(planned.canvas)
        scored, predictions = self._score_batch(variables, planned, batch, to_device)
        per_batch.extend(scored)
        if not preview:
          preview = self._preview(planned, batch, predictions)
        if len(per_batch) > 2:
          per_batch[-3][0].block_until_ready()
        bar.update(planned.num_images)
        done += planned.num_images
        now = time.perf_counter()
        if now - last_log > LOG_EVERY_S and bar.disable and jax.process_index() == 0:
          rate = done / (now - start)
          logging.info('Evaluating %s: %d / %d images, %.1f images/s, ETA %.0f s.',
                       self.source.split, done, total_images, rate,
                       (total_images - done) / max(rate, 1e-9))
          last_log = now
      fetched = jax.device_get(per_batch)
    elapsed = time.perf_counter() - start
    self.last_speed = (total_images, total_images / max(elapsed, 1e-9))
    logging.log(logging.INFO if elapsed > 60 else logging.DEBUG,
                'Evaluated %d images of %s in %.1f s (%.1f images/s; %d canvas%s).',
                total_images, self.source.split, elapsed, total_images / max(elapsed, 1e-9),
                len(self.canvases), 'es' * (len(self.canvases) > 1))
    k = len(self.class_names)
    confusion = sum((np.asarray(cm, np.int64) for cm, _ in fetched), np.zeros((k, k), np.int64))
    loss = math.fsum(float(l) for _, l in fetched)
    labelled = int(confusion.sum())
    return Evaluation(confusion, loss / labelled if labelled else float('nan'), preview)

  def _score_resized(self, variables: Variables, planned: pipeline.EvalBatch,
                     batch: dict[str, np.ndarray], to_device) -> tuple[list, jax.Array]:
    """[(confusion, loss)] of a batch scored at its input size, and its predictions."""
    del planned
    confusion, loss, predictions = self._step(variables, jax.tree.map(to_device, batch))
    return [(confusion, loss)], predictions

  def _score_original(self, variables: Variables, planned: pipeline.EvalBatch,
                      batch: dict[str, np.ndarray], to_device) -> tuple[list, jax.Array]:
    """(confusion, loss) of each label tile of a batch scored at its original size, and the
    predictions at the input size."""
    sizes, label_sizes = to_device(batch['size']), to_device(batch['label_size'])
    scores, predictions = self._predict(variables, to_device(batch['image']), sizes)
    return [self._score(scores, sizes, to_device(batch['label'][:, t]), label_sizes,
                        to_device(batch['tile_offset'][:, t]))
            for t in range(planned.num_tiles)], predictions

  def _resized_label(self, batch: dict[str, np.ndarray], j: int, index: int) -> np.ndarray:
    del index
    h, w = batch['size'][j]
    return batch['label'][j, :h, :w]

  def _original_label(self, batch: dict[str, np.ndarray], j: int, index: int) -> np.ndarray:
    """The labels come at their original size, in tiles: the record's, at the input size."""
    del batch, j
    record = self.source[index]
    return pipeline.resize(record['image'], record['label'], pipeline.keep_ratio_scale(
        *record['label'].shape, self.config.input.eval_size))[1]

  def _preview(self, planned: pipeline.EvalBatch, batch: dict[str, np.ndarray],
               predictions: jax.Array) -> Preview:
    """(image, label, prediction) of the first `config.eval.preview_images` images of this
    process's share of the split's first batch (the same images at every evaluation), each
    cropped to the image; labels at the input size. Only process 0 makes one."""
    n = self.config.eval.preview_images
    if n <= 0 or jax.process_index() != 0:
      return []
    local = len(batch['image'])
    indices = [i for i in planned.indices[:local] if i >= 0][:n]
    if not indices:
      return []
    predicted = local_rows(predictions)
    examples = []
    for j, index in enumerate(indices):
      h, w = batch['size'][j]
      label = self._preview_label(batch, j, index)
      examples.append((batch['image'][j, :h, :w], label[:h, :w], predicted[j, :h, :w]))
    return examples

  def write(self, variables: Variables, step: int, workdir: str, writer, class_writer, *,
            tag: str = '') -> dict:
    """Evaluates; writes eval/<step>.json (and its per-class table eval/<step>.csv), or
    eval/<step>_<split>.json for another split than the config's and
    eval/<step>[_<split>]_<tag>.json for another protocol than the run's (`protocol_tag`),
    with TensorBoard scalars under the same prefix."""
    result = self.evaluate(variables)
    record = evaluation.summarize(result.confusion, self.class_names, step,
                                  fairness_fraction=self.config.eval.fairness_fraction,
                                  cross_entropy=result.cross_entropy)
    record['split'] = self.source.split
    record['protocol'] = protocol(self.config, self.source.split)
    suffix = rundir.record_suffix(self.source.split, self.config.dataset.eval_split, tag)
    prefix = f'eval{suffix}'
    del writer  # the log gets the line below; the scalars go to TensorBoard only
    class_writer.write_scalars(step, tensorboard_layout.eval_scalars(record, suffix))
    images = {f'{prefix}/per_class_iou': tensorboard_layout.per_class_chart(record)[None]}
    if result.preview:
      shown = np.concatenate([np.concatenate([l.ravel(), p.ravel()])
                              for _, l, p in result.preview])
      images[f'{prefix}/predictions'] = tensorboard_layout.titled_preview(
          preview_grid(result.preview, self.palette), preview_layout(result.preview)[1],
          shown, list(self.class_names), self.palette)[None]
    class_writer.write_images(step, images)
    if jax.process_index() == 0:
      path = rundir.eval_path(workdir, step, suffix)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      records.write_json(path, record)
      records.write_csv(rundir.eval_path(workdir, step, suffix, 'csv'),
                        evaluation.per_class_rows(record))
    logging.info('Evaluation at step %d: mIoU %.2f, pixel accuracy %.2f, cross-entropy %.3f '
                 '(%s%s; %d images, %.1f images/s).', step, record['miou'],
                 record['pixel_accuracy'], record['cross_entropy'],
                 self.source.split, f', {tag}' if tag else '', *self.last_speed)
    return record
