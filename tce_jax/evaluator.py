"""Evaluation of model variables on a split: inference, confusion matrix, records.

`predict` is the inference (multi-scale and flip averaging of probabilities); `eval_step` the
per-device confusion matrix of a global batch, run under `jax.shard_map`; `Evaluator` loops
over a split and writes eval/<step>.json and TensorBoard scalars. It takes model variables
({'params', 'batch_stats'}), not a training state, so evaluating a checkpoint needs only the
model. The metrics themselves are pure functions in `tce_jax.evaluation`.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Sequence

from absl import logging
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from tce_jax import evaluation
from tce_jax import models
from tce_jax import records
from tce_jax.data import datasets
from tce_jax.data import pipeline
from tce_jax.data.classes import class_tag

AXIS = 'batch'  # the mesh axis the batch is split over (as in training)
Variables = dict[str, Any]  # {'params': ..., 'batch_stats': ...}


def predict(model, variables: Variables, images: jax.Array, *, scales=(1.0,),
            flip: bool = False) -> jax.Array:
  """Class probabilities [B, H, W, K] for uint8 images, averaged over rescaled (and flipped)
  inputs; each prediction is resized back to the input size before averaging."""
  b, h, w, _ = images.shape
  x = pipeline.normalize(images, model.dtype)
  total = 0.0
  for scale in scales:
    size = (max(int(round(h * scale)), 1), max(int(round(w * scale)), 1))
    scaled = x if size == (h, w) else jax.image.resize(x, (b, *size, 3), 'bilinear')
    for flipped in ((False, True) if flip else (False,)):
      logits = model.apply(variables, scaled[:, :, ::-1] if flipped else scaled, train=False)
      logits = logits[:, :, ::-1] if flipped else logits
      logits = jax.image.resize(logits.astype(jnp.float32), (b, h, w, logits.shape[-1]),
                                'bilinear')
      total = total + jax.nn.softmax(logits, axis=-1)
  return total / (len(scales) * (2 if flip else 1))


def eval_step(variables: Variables, batch: dict[str, jax.Array], *, model, num_classes: int,
              scales=(1.0,), flip: bool = False, axis_name: str = AXIS) -> jax.Array:
  """The int32 confusion matrix [K, K] of a global batch (this device's share, summed over
  devices). One batch holds far fewer than 2^31 pixels; the split's total is summed in int64
  on the host."""
  probs = predict(model, variables, batch['image'], scales=scales, flip=flip)
  confusion = evaluation.confusion_matrix(jnp.argmax(probs, -1), batch['label'], num_classes)
  return lax.psum(confusion, axis_name)


def eval_batch_size(requested: int, num_devices: int) -> int:
  """The global evaluation batch: `requested` rounded up to a multiple of the devices (the
  padding images are ignore-labelled, so the result does not depend on it)."""
  return math.ceil(requested / num_devices) * num_devices


class Evaluator:
  """Evaluates model variables on a split; writes TensorBoard scalars and eval/<step>.json."""

  def __init__(self, config: ml_collections.ConfigDict, source: datasets.SegmentationSource,
               class_names: Sequence[str], mesh: jax.sharding.Mesh):
    self.config, self.source, self.class_names = config, source, tuple(class_names)
    self.mesh = mesh
    self.batch_size = eval_batch_size(config.input.eval_batch_size, mesh.size)
    if self.batch_size != config.input.eval_batch_size:
      logging.info('Evaluation batch %d rounded up to %d (a multiple of the %d devices).',
                   config.input.eval_batch_size, self.batch_size, mesh.size)
    model = models.create_model(config, len(class_names), train=False,
                                output_stride=config.model.eval_output_stride)
    self._step = jax.jit(
        jax.shard_map(functools.partial(eval_step, model=model, num_classes=len(class_names),
                                        scales=tuple(config.eval.scales),
                                        flip=config.eval.flip),
                      mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(), check_vma=False),
        in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))))

  def __call__(self, variables: Variables) -> np.ndarray:
    """The int64 confusion matrix [K, K] of the whole split."""
    sharding = NamedSharding(self.mesh, P(AXIS))
    per_batch = []  # int32 [K, K] each, kept on the device until the end (no sync per batch)
    for batch in pipeline.prefetch_iterator(pipeline.eval_batches(
        self.source, self.batch_size, process_index=jax.process_index(),
        process_count=jax.process_count(), size=self.config.input.eval_size)):
      batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
      per_batch.append(self._step(variables, batch))
    k = len(self.class_names)
    return sum((np.asarray(cm, np.int64) for cm in jax.device_get(per_batch)),
               np.zeros((k, k), np.int64))

  def write(self, variables: Variables, step: int, workdir: str, writer,
            class_writer) -> dict:
    """Evaluates; writes eval/<step>.json (eval/<step>_<split>.json for another split)."""
    record = evaluation.summarize(self(variables), self.class_names, step,
                                  fairness_fraction=self.config.eval.fairness_fraction)
    record['split'] = self.source.split
    prefix = 'eval' if self.source.split == self.config.dataset.eval_split else (
        f'eval_{self.source.split}')
    writer.write_scalars(step, {f'{prefix}/miou': record['miou'],
                                f'{prefix}/pixel_accuracy': record['pixel_accuracy'],
                                **{f'{prefix}/fairness/{k}': v for k, v in
                                   record['fairness'].items() if k != 'num_classes'}})
    class_writer.write_scalars(step, {f'{prefix}/iou/{class_tag(name)}': v for name, v in
                                      record['per_class_iou'].items() if v is not None})
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
      suffix = '' if prefix == 'eval' else f'_{self.source.split}'
      records.write_json(os.path.join(workdir, 'eval', f'{step}{suffix}.json'), record)
    logging.info('Evaluation at step %d: mIoU %.2f, pixel accuracy %.2f (%s).', step,
                 record['miou'], record['pixel_accuracy'], self.source.split)
    return record
