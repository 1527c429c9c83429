"""Training and evaluation loop: data-parallel steps under `jax.shard_map`, CLU logging, orbax.

The train step is per-device code, as with `pmap`: gradients and metrics are averaged with
`lax.pmean` over the mesh axis 'batch', BatchNorm statistics are synchronised through the same
axis name, and the losses complete their reductions over it, so N devices compute exactly the
global-batch loss of one device. `jax.shard_map` (with `check_vma=False`, i.e. pmap's
semantics) maps it over a 1-D mesh of all devices of all processes inside `jax.jit`.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import flax.struct
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from tce_jax import config_validation
from tce_jax import evaluation
from tce_jax import losses
from tce_jax import models
from tce_jax import sampling
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data import pipeline

AXIS = 'batch'  # the mesh axis the batch is split over
_DROPOUT_STREAM, _SAMPLER_STREAM = 0, 1


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: model, optimizer, sampler and the loader's position."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  sampler: sampling.SamplerState
  class_queue: jax.Array  # [lag] int32: classes drawn for steps step .. step+lag-1 (tce)
  key: jax.Array  # uint32 [2] base key of dropout and class draws


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Polynomial ("poly") decay from the base rate to 0 over the run."""
  return optax.polynomial_schedule(init_value=config.train.learning_rate, end_value=0.0,
                                   power=config.train.poly_power,
                                   transition_steps=config.train.num_steps)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """SGD with momentum and L2 weight decay added to the gradient (torch.optim.SGD style)."""
  parts = []
  if config.train.grad_clip_norm is not None:
    parts.append(optax.clip_by_global_norm(config.train.grad_clip_norm))
  if config.train.weight_decay:
    parts.append(optax.add_decayed_weights(config.train.weight_decay))
  parts.append(optax.sgd(create_learning_rate_fn(config), momentum=config.train.momentum))
  return optax.chain(*parts)


def normalize(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 [B, H, W, 3] -> ImageNet-normalised floats (done on device: 4x less transfer)."""
  mean = jnp.asarray(pipeline.IMAGENET_MEAN)
  std = jnp.asarray(pipeline.IMAGENET_STD)
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def make_loss_fn(config: ml_collections.ConfigDict,
                 class_weights: np.ndarray | None) -> Callable[..., jax.Array]:
  """(logits, labels, step, axis_name) -> global batch loss of `config.loss`."""
  name = config.loss.name
  kwargs = {'weighted_ce': dict(class_weights=class_weights),
            'focal': dict(gamma=config.loss.focal_gamma, alpha=class_weights)}.get(name, {})
  fn = losses.LOSSES[name]
  tilted = name in ('tce_image', 'tce_class')

  def loss_fn(logits, labels, step, axis_name):
    if not tilted:
      return fn(logits, labels, axis_name=axis_name, **kwargs)
    t = config.tce.t
    if config.loss.t_warmup_steps:
      t = t * jnp.minimum(1.0, step / config.loss.t_warmup_steps)
    return fn(logits, labels, t, axis_name=axis_name)

  return loss_fn


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, tx, loss_fn,
               config: ml_collections.ConfigDict, axis_name: str = AXIS):
  """One SGD step on this device's share of the global batch (runs under shard_map).

  Returns the new state, the global-batch metrics, and (Stochastic TCE) the class drawn
  for step + lag from the sampler after its update with this batch's MCCE.
  """
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  images, labels = normalize(batch['image'], dtype), batch['label'].astype(jnp.int32)
  dropout_key = jax.random.fold_in(
      jax.random.fold_in(jax.random.fold_in(state.key, _DROPOUT_STREAM), state.step),
      lax.axis_index(axis_name))

  def objective(params):
    logits, new_vars = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                   images, train=True, rngs={'dropout': dropout_key},
                                   mutable=['batch_stats'])
    return loss_fn(logits, labels, state.step, axis_name), (logits, new_vars)

  (loss, (logits, new_vars)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
  grads = lax.pmean(grads, axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  logits = lax.stop_gradient(logits)
  mcce = loss if config.loss.name == 'mcce' else losses.cross_entropy(
      logits, labels, axis_name=axis_name)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) & (labels != losses.IGNORE_INDEX))
  valid = jnp.sum(labels != losses.IGNORE_INDEX)
  metrics = {'loss': loss, 'mcce': mcce, 'grad_norm': optax.global_norm(grads),
             'pixel_accuracy': 100.0 * lax.psum(correct, axis_name) / jnp.maximum(
                 lax.psum(valid, axis_name), 1)}
  sampler, class_queue = state.sampler, state.class_queue
  next_class = jnp.int32(-1)
  if config.sampling.name == 'tce':  # Algorithm 1, lines 3-8 then 2a for step + lag
    sampler = sampling.update_sampler(sampler, class_queue[0], mcce, t=config.tce.t,
                                      gamma=config.tce.gamma)
    next_class = sampling.draw_class(sampler, _draw_key(state.key, state.step + len(class_queue)))
    class_queue = jnp.concatenate([class_queue[1:], next_class[None]])
  new_state = state.replace(step=state.step + 1, params=params,
                            batch_stats=new_vars['batch_stats'], opt_state=opt_state,
                            sampler=sampler, class_queue=class_queue)
  return new_state, metrics, next_class


def _draw_key(key: jax.Array, step) -> jax.Array:
  """The key of the class draw for `step`: the same on every device and process."""
  return jax.random.fold_in(jax.random.fold_in(key, _SAMPLER_STREAM), step)


def make_train_step(config: ml_collections.ConfigDict, model, tx, loss_fn, mesh):
  """`train_step` mapped over `mesh` (state replicated, batch split), jitted, state donated."""
  step_fn = functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn, config=config)
  return jax.jit(
      jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P(), P()),
                    check_vma=False),
      in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))),
      donate_argnums=(0,))


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model, num_classes: int,
              axis_name: str = AXIS) -> jax.Array:
  """The confusion matrix [K, K] of a global batch (this device's share, summed over devices)."""
  logits = model.apply({'params': state.params, 'batch_stats': state.batch_stats},
                       normalize(batch['image'], model.dtype), train=False)
  confusion = evaluation.confusion_matrix(jnp.argmax(logits, -1), batch['label'], num_classes)
  return lax.psum(confusion, axis_name)


def create_train_state(config: ml_collections.ConfigDict, model, tx, *, num_classes: int,
                       available: np.ndarray) -> TrainState:
  """Initial parameters, optimizer and sampler state (with its first `lag` draws)."""
  key = jax.random.PRNGKey(config.seed)
  h, w = config.input.crop_size
  variables = model.init({'params': jax.random.fold_in(key, 2), 'dropout': key},
                         jnp.zeros((1, h, w, 3), jnp.float32), train=False)
  params = variables['params']
  sampler = sampling.init_sampler(num_classes, config.tce.t, available=available)
  if config.sampling.name == 'tce':
    class_queue = jnp.stack([sampling.draw_class(sampler, _draw_key(key, s))
                             for s in range(config.sampling.lag)])
  else:
    class_queue = jnp.full((1,), -1, jnp.int32)  # unused (orbax cannot save empty arrays)
  return TrainState(step=jnp.int32(0), params=params, batch_stats=variables['batch_stats'],
                    opt_state=tx.init(params), sampler=sampler, class_queue=class_queue,
                    key=key)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh, axis 'batch', over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))


def _tag(name: str) -> str:
  return name.replace(' ', '_')


def _write_json(path: str, record: dict):
  """Writes atomically: a reader never sees a half-written file."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(record, f, indent=1)
  os.replace(tmp, path)


class Evaluator:
  """Evaluates a train state on a split; writes TensorBoard scalars and eval/<step>.json."""

  def __init__(self, config: ml_collections.ConfigDict, source: datasets.SegmentationSource,
               class_names, mesh):
    self.config, self.source, self.class_names = config, source, tuple(class_names)
    self.mesh = mesh
    model = models.create_model(config, len(class_names), train=False,
                                output_stride=config.model.eval_output_stride)
    self._step = jax.jit(
        jax.shard_map(functools.partial(eval_step, model=model, num_classes=len(class_names)),
                      mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(), check_vma=False),
        in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))))

  def __call__(self, state: TrainState) -> np.ndarray:
    sharding = NamedSharding(self.mesh, P(AXIS))
    confusion = None
    for batch in pipeline.prefetch_iterator(pipeline.eval_batches(
        self.source, self.config.input.eval_batch_size, process_index=jax.process_index(),
        process_count=jax.process_count())):
      batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
      cm = self._step(state, batch)
      confusion = cm if confusion is None else confusion + cm
    return np.asarray(jax.device_get(confusion))

  def write(self, state: TrainState, step: int, workdir: str, writer) -> dict:
    record = evaluation.summarize(self(state), self.class_names, step)
    scalars = {'eval/miou': record['miou'], 'eval/pixel_accuracy': record['pixel_accuracy']}
    scalars.update({f'eval/iou/{_tag(name)}': v for name, v in record['per_class_iou'].items()
                    if v is not None})
    writer.write_scalars(step, scalars)
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
      _write_json(os.path.join(workdir, 'eval', f'{step}.json'), record)
    logging.info('Evaluation at step %d: mIoU %.2f, pixel accuracy %.2f (%s).', step,
                 record['miou'], record['pixel_accuracy'], self.source.split)
    return record


def _sampler_scalars(sampler: sampling.SamplerState, class_names) -> dict[str, float]:
  """Per-class sampling probability, log EMA tilted loss and draw count, for TensorBoard."""
  sampler = jax.device_get(sampler)
  probs = np.asarray(jax.nn.softmax(sampler.log_tilted))
  scalars = {}
  for c, name in enumerate(class_names):
    scalars[f'sampling/probability/{_tag(name)}'] = float(probs[c])
    scalars[f'sampling/log_tilted/{_tag(name)}'] = float(sampler.log_tilted[c])
    scalars[f'sampling/draw_count/{_tag(name)}'] = int(sampler.draw_counts[c])
  return scalars


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the last eval."""
  config_validation.validate_config(config, jax.device_count(), jax.process_count())
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  spec = datasets.get_spec(config)
  num_classes = spec.num_classes
  train_source = datasets.load_source(config, config.dataset.train_split)
  eval_source = datasets.load_source(config, config.dataset.eval_split)
  needs_index = config.sampling.name == 'tce' or config.loss.name in ('focal', 'weighted_ce')
  index = class_index_lib.load_class_index(train_source) if needs_index else None
  class_weights = (class_index_lib.inverse_frequency_weights(index.pixel_counts)
                   if index is not None else None)
  available = index.available if index is not None else np.ones(num_classes, bool)

  mesh = make_mesh()
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P(AXIS))
  model = models.create_model(config, num_classes, train=True, axis_name=AXIS)
  tx = create_optimizer(config)
  state = jax.jit(functools.partial(create_train_state, config, model, tx,
                                    num_classes=num_classes, available=available),
                  out_shardings=replicated)()

  checkpoints = ocp.CheckpointManager(
      os.path.join(workdir, 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints,
                                           create=True))
  if checkpoints.latest_step() is not None:
    state = checkpoints.restore(checkpoints.latest_step(), args=ocp.args.StandardRestore(state))
    logging.info('Resumed from the checkpoint of step %d.', int(state.step))
  start_step = int(state.step)

  p_train_step = make_train_step(config, model, tx, make_loss_fn(config, class_weights), mesh)
  evaluator = Evaluator(config, eval_source, spec.class_names, mesh)

  writer = metric_writers.create_default_writer(workdir,
                                                just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})
  num_steps = config.train.num_steps
  report_progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                                    every_steps=config.train.log_every)
  batches = pipeline.TrainBatches(
      train_source, global_batch_size=config.train.batch_size, seed=config.seed,
      crop_size=config.input.crop_size, scales=config.input.scales, flip=config.input.flip,
      class_index=index, process_index=jax.process_index(),
      process_count=jax.process_count())
  prefetcher = pipeline.Prefetcher(batches, config.input.num_threads)
  tce = config.sampling.name == 'tce'
  ahead = config.sampling.lag if tce else config.input.prefetch
  if tce:  # the classes of the next `lag` steps are already drawn (and checkpointed)
    for i, cls in enumerate(np.asarray(jax.device_get(state.class_queue))):
      if start_step + i < num_steps:
        prefetcher.submit(start_step + i, int(cls))
  else:
    for s in range(start_step, min(start_step + ahead, num_steps)):
      prefetcher.submit(s)

  logging.info('Training %s from step %d to %d on %d devices (%d processes).', config.name,
               start_step, num_steps, jax.device_count(), jax.process_count())
  window, record = [], None
  try:
    for step in range(start_step, num_steps):
      local = prefetcher.get(step)
      batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(data_sharding, x),
                           local)
      state, metrics, next_class = p_train_step(state, batch)
      if step + ahead < num_steps:
        prefetcher.submit(step + ahead, next_class if tce else None)
      window.append(metrics)
      done = step + 1
      report_progress(done)
      if done % config.train.log_every == 0 or done == num_steps:
        summary = {f'train/{k}': float(np.mean(v)) for k, v in
                   jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(window)).items()}
        window = []
        if not np.isfinite(summary['train/loss']):
          raise FloatingPointError(
              f'Non-finite training loss at step {done}; the last finite checkpoint is kept '
              f'in {workdir}/checkpoints.')
        summary['train/learning_rate'] = float(create_learning_rate_fn(config)(done - 1))
        if tce:
          summary.update(_sampler_scalars(state.sampler, spec.class_names))
        writer.write_scalars(done, summary)
      if done % config.train.eval_every == 0 or done == num_steps:
        record = evaluator.write(state, done, workdir, writer)
      if done % config.train.checkpoint_every == 0 or done == num_steps:
        checkpoints.save(done, args=ocp.args.StandardSave(state))
    if record is None and start_step >= num_steps:  # already finished: evaluate once more
      record = evaluator.write(state, num_steps, workdir, writer)
  finally:
    prefetcher.close()
    checkpoints.wait_until_finished()
    checkpoints.close()
    writer.flush()
  return record


def _flatten(d: dict, prefix: str = '') -> dict:
  flat = {}
  for k, v in d.items():
    if isinstance(v, dict):
      flat.update(_flatten(v, f'{prefix}{k}.'))
    else:
      flat[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return flat
