"""Training and evaluation loop: data-parallel steps under `jax.shard_map`, CLU logging, orbax.

The train step is per-device code, as with `pmap`: gradients and metrics are averaged with
`lax.pmean` over the mesh axis 'batch', BatchNorm statistics are synchronised through the same
axis name, and the losses complete their reductions over it, so N devices compute exactly the
global-batch loss of one device. `jax.shard_map` (with `check_vma=False`, i.e. pmap's
semantics) maps it over a 1-D mesh of all devices of all processes inside `jax.jit`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Iterator

from absl import logging
from clu import metric_writers
from clu import periodic_actions
from flax import traverse_util
import flax.struct
import jax
from jax import lax
from jax.experimental import multihost_utils
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
from tce_jax.models import pretrained

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
  nonfinite_steps: jax.Array  # steps whose loss or gradients were not finite (skipped)


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
    outputs, new_vars = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                    images, train=True, rngs={'dropout': dropout_key},
                                    mutable=['batch_stats'])
    logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
    main_loss = loss_fn(logits, labels, state.step, axis_name)
    loss = main_loss
    if aux_logits is not None:  # UPerNet's auxiliary head
      loss = loss + config.model.aux_weight * loss_fn(aux_logits, labels, state.step, axis_name)
    return loss, (logits, new_vars, main_loss)

  (loss, (logits, new_vars, main_loss)), grads = jax.value_and_grad(
      objective, has_aux=True)(state.params)
  grads = lax.pmean(grads, axis_name)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def unless_nonfinite(new, old):
    """With config.train.nonfinite='skip', a non-finite step changes no model state."""
    if config.train.nonfinite != 'skip':
      return new
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = unless_nonfinite(optax.apply_updates(state.params, updates), state.params)
  opt_state = unless_nonfinite(opt_state, state.opt_state)
  batch_stats = unless_nonfinite(new_vars['batch_stats'], state.batch_stats)
  nonfinite_steps = state.nonfinite_steps + jnp.where(finite, 0, 1).astype(jnp.int32)
  logits = lax.stop_gradient(logits)
  mcce = main_loss if config.loss.name == 'mcce' else losses.cross_entropy(
      logits, labels, axis_name=axis_name)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) & (labels != losses.IGNORE_INDEX))
  valid = jnp.sum(labels != losses.IGNORE_INDEX)
  metrics = {'loss': loss, 'mcce': mcce, 'grad_norm': grad_norm, 'finite': finite,
             'nonfinite_steps': nonfinite_steps,
             'pixel_accuracy': 100.0 * lax.psum(correct, axis_name) / jnp.maximum(
                 lax.psum(valid, axis_name), 1)}
  sampler, class_queue = state.sampler, state.class_queue
  next_class = jnp.int32(-1)
  if config.sampling.name == 'tce':  # Algorithm 1, lines 3-8 then 2a for step + lag
    sampler = unless_nonfinite(sampling.update_sampler(
        sampler, class_queue[0], mcce, t=config.tce.t, gamma=config.tce.gamma), sampler)
    next_class = sampling.draw_class(sampler, _draw_key(state.key, state.step + len(class_queue)))
    class_queue = jnp.concatenate([class_queue[1:], next_class[None]])
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, sampler=sampler, class_queue=class_queue,
                            nonfinite_steps=nonfinite_steps)
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


def predict(model, variables, images: jax.Array, *, scales=(1.0,), flip: bool = False):
  """Class probabilities [B, H, W, K] for uint8 images, averaged over rescaled (and flipped)
  inputs; each prediction is resized back to the input size before averaging."""
  b, h, w, _ = images.shape
  x = normalize(images, model.dtype)
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


def eval_step(state: TrainState, batch: dict[str, jax.Array], *, model, num_classes: int,
              scales=(1.0,), flip: bool = False, axis_name: str = AXIS) -> jax.Array:
  """The confusion matrix [K, K] of a global batch (this device's share, summed over devices)."""
  probs = predict(model, {'params': state.params, 'batch_stats': state.batch_stats},
                  batch['image'], scales=scales, flip=flip)
  confusion = evaluation.confusion_matrix(jnp.argmax(probs, -1), batch['label'], num_classes)
  return lax.psum(confusion, axis_name)


def create_train_state(config: ml_collections.ConfigDict, model, tx, *, num_classes: int,
                       available: np.ndarray) -> TrainState:
  """Initial parameters, optimizer and sampler state (with its first `lag` draws)."""
  key = jax.random.PRNGKey(config.seed)
  h, w = config.input.crop_size
  variables = model.init({'params': jax.random.fold_in(key, 2), 'dropout': key},
                         jnp.zeros((1, h, w, 3), jnp.float32), train=True)  # + aux heads
  params = variables['params']
  sampler = sampling.init_sampler(num_classes, config.tce.t, available=available)
  if config.sampling.name == 'tce':
    class_queue = jnp.stack([sampling.draw_class(sampler, _draw_key(key, s))
                             for s in range(config.sampling.lag)])
  else:
    class_queue = jnp.full((1,), -1, jnp.int32)  # unused (orbax cannot save empty arrays)
  return TrainState(step=jnp.int32(0), params=params, batch_stats=variables['batch_stats'],
                    opt_state=tx.init(params), sampler=sampler, class_queue=class_queue,
                    key=key, nonfinite_steps=jnp.int32(0))


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
        jax.shard_map(functools.partial(eval_step, model=model, num_classes=len(class_names),
                                        scales=tuple(config.eval.scales),
                                        flip=config.eval.flip),
                      mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(), check_vma=False),
        in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))))

  def __call__(self, state: TrainState) -> np.ndarray:
    sharding = NamedSharding(self.mesh, P(AXIS))
    confusion = None
    for batch in pipeline.prefetch_iterator(pipeline.eval_batches(
        self.source, self.config.input.eval_batch_size, process_index=jax.process_index(),
        process_count=jax.process_count(), size=self.config.input.eval_size)):
      batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
      cm = self._step(state, batch)
      confusion = cm if confusion is None else confusion + cm
    return np.asarray(jax.device_get(confusion))

  def write(self, state: TrainState, step: int, workdir: str, writer, class_writer) -> dict:
    """Evaluates; writes eval/<step>.json (eval/<step>_<split>.json for another split)."""
    record = evaluation.summarize(self(state), self.class_names, step,
                                  fairness_fraction=self.config.eval.fairness_fraction)
    record['split'] = self.source.split
    prefix = 'eval' if self.source.split == self.config.dataset.eval_split else (
        f'eval_{self.source.split}')
    writer.write_scalars(step, {f'{prefix}/miou': record['miou'],
                                f'{prefix}/pixel_accuracy': record['pixel_accuracy'],
                                **{f'{prefix}/fairness/{k}': v for k, v in
                                   record['fairness'].items() if k != 'num_classes'}})
    class_writer.write_scalars(step, {f'{prefix}/iou/{_tag(name)}': v for name, v in
                                      record['per_class_iou'].items() if v is not None})
    if jax.process_index() == 0:
      os.makedirs(os.path.join(workdir, 'eval'), exist_ok=True)
      suffix = '' if prefix == 'eval' else f'_{self.source.split}'
      _write_json(os.path.join(workdir, 'eval', f'{step}{suffix}.json'), record)
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


@dataclasses.dataclass
class Experiment:
  """What a config builds: data sources, class index, mesh, model, optimizer, jitted step."""
  config: ml_collections.ConfigDict
  spec: datasets.DatasetSpec
  train_source: datasets.SegmentationSource
  eval_source: datasets.SegmentationSource
  class_index: class_index_lib.ClassIndex | None
  mesh: jax.sharding.Mesh
  model: Any
  tx: optax.GradientTransformation
  train_step: Callable

  def initial_state(self) -> TrainState:
    available = (self.class_index.available if self.class_index is not None
                 else np.ones(self.spec.num_classes, bool))
    replicated = NamedSharding(self.mesh, P())
    state = jax.jit(functools.partial(create_train_state, self.config, self.model, self.tx,
                                      num_classes=self.spec.num_classes, available=available),
                    out_shardings=replicated)()
    if self.config.model.pretrained:  # ImageNet weights for the backbone
      variables = pretrained.apply_backbone(
          {'params': state.params, 'batch_stats': state.batch_stats},
          pretrained.load_backbone(self.config.model.pretrained))
      state = state.replace(**jax.device_put(variables, replicated))
    return state

  @functools.cached_property
  def train_batches(self) -> pipeline.TrainBatches:
    c = self.config
    return pipeline.TrainBatches(
        self.train_source, global_batch_size=c.train.batch_size, seed=c.seed,
        crop_size=c.input.crop_size, scales=c.input.scales, flip=c.input.flip,
        class_index=self.class_index, process_index=jax.process_index(),
        process_count=jax.process_count(), base_size=c.input.base_size,
        ratio_range=c.input.ratio_range, photometric=c.input.photometric,
        skip_bad_records=c.input.skip_bad_records)

  def skipped_records(self) -> int:
    """Bad training records replaced so far in this process (config.input.skip_bad_records)."""
    return self.train_batches.skipped


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Validates `config` and builds everything training needs (no compilation yet)."""
  config_validation.validate_config(config, jax.device_count(), jax.process_count())
  spec = datasets.get_spec(config)
  needs_index = config.sampling.name == 'tce' or config.loss.name in ('focal', 'weighted_ce')
  if jax.process_count() > 1:  # process 0 generates / indexes first; the others then read
    if jax.process_index() == 0:
      source = datasets.load_source(config, config.dataset.train_split)
      if needs_index:
        class_index_lib.load_class_index(source)
    multihost_utils.sync_global_devices('dataset and class index ready')
  train_source = datasets.load_source(config, config.dataset.train_split)
  eval_source = datasets.load_source(config, config.dataset.eval_split)
  index = class_index_lib.load_class_index(train_source) if needs_index else None
  class_weights = (class_index_lib.inverse_frequency_weights(index.pixel_counts)
                   if index is not None else None)
  mesh = make_mesh()
  model = models.create_model(config, spec.num_classes, train=True, axis_name=AXIS)
  tx = create_optimizer(config)
  step = make_train_step(config, model, tx, make_loss_fn(config, class_weights), mesh)
  return Experiment(config, spec, train_source, eval_source, index, mesh, model, tx, step)


def training_steps(experiment: Experiment, state: TrainState) -> Iterator[tuple]:
  """Runs the steps from `state.step` to the end; yields (steps done, state, metrics).

  Batches are loaded on host threads ahead of the device: `input.prefetch` steps ahead with
  uniform sampling; with Stochastic TCE as soon as their class is drawn on the device, which
  is `sampling.lag` steps ahead. A yielded state is donated to the next step: use it (save,
  evaluate, read metrics) before asking for the next one.
  """
  config = experiment.config
  data_sharding = NamedSharding(experiment.mesh, P(AXIS))
  start, num_steps = int(state.step), config.train.num_steps
  tce = config.sampling.name == 'tce'
  ahead = config.sampling.lag if tce else config.input.prefetch
  prefetcher = pipeline.Prefetcher(experiment.train_batches, config.input.num_threads)
  try:
    if tce:  # the classes of the next `lag` steps are already drawn (and checkpointed)
      for i, cls in enumerate(np.asarray(jax.device_get(state.class_queue))):
        if start + i < num_steps:
          prefetcher.submit(start + i, int(cls))
    else:
      for s in range(start, min(start + ahead, num_steps)):
        prefetcher.submit(s)
    for step in range(start, num_steps):
      batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(data_sharding, x),
                           prefetcher.get(step))
      state, metrics, next_class = experiment.train_step(state, batch)
      if step + ahead < num_steps:
        prefetcher.submit(step + ahead, next_class if tce else None)
      yield step + 1, state, metrics
  finally:
    prefetcher.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the last eval."""
  experiment = build_experiment(config)
  workdir = os.path.abspath(workdir)
  _check_writable(workdir)
  class_names = experiment.spec.class_names
  state = experiment.initial_state()
  checkpoints = ocp.CheckpointManager(
      os.path.join(workdir, 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints,
                                           create=True, cleanup_tmp_directories=True))
  if checkpoints.latest_step() is not None:
    state = restore_checkpoint(checkpoints, checkpoints.latest_step(), state)
    logging.info('Resumed from the checkpoint of step %d.', int(state.step))
  start_step, num_steps = int(state.step), config.train.num_steps
  evaluator = Evaluator(config, experiment.eval_source, class_names, experiment.mesh)
  writer = metric_writers.create_default_writer(workdir,
                                                just_logging=jax.process_index() > 0)
  # Per-class scalars go to TensorBoard only (they would flood the log).
  class_writer = (metric_writers.SummaryWriter(workdir) if jax.process_index() == 0
                  else metric_writers.MultiWriter([]))
  if start_step == 0:
    writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in
                          traverse_util.flatten_dict(config.to_dict(), sep='.').items()})
  if jax.process_index() == 0:  # what `evaluate` and `report` read back
    _write_json(os.path.join(workdir, 'config.json'), json.loads(config.to_json_best_effort()))
  report_progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                                    every_steps=config.train.log_every)
  learning_rate = create_learning_rate_fn(config)
  logging.info('Training %s from step %d to %d on %d devices (%d processes).', config.name,
               start_step, num_steps, jax.device_count(), jax.process_count())
  window, unchecked, record = [], [], None

  def check_finite():
    """config.train.nonfinite='stop': stop at the first non-finite step since the last check
    (before anything of it is saved or evaluated)."""
    flags = np.asarray(jax.device_get([f for _, f in unchecked]), bool)
    steps = [s for s, _ in unchecked]
    unchecked.clear()
    if config.train.nonfinite == 'stop' and not flags.all():
      raise FloatingPointError(
          f'Non-finite loss or gradients at step {steps[int(np.argmin(flags))]} '
          f'(config.train.nonfinite=stop). The checkpoints in {workdir}/checkpoints (latest: '
          f'step {checkpoints.latest_step()}) hold only finite parameters; lower the learning '
          'rate, or use --config.train.nonfinite=skip to skip such steps.')

  try:
    for done, state, metrics in training_steps(experiment, state):
      window.append(metrics)
      unchecked.append((done, metrics['finite']))
      report_progress(done)
      if done % config.train.log_every == 0 or done == num_steps:
        check_finite()
        summary = {f'train/{k}': float(np.mean(v)) for k, v in
                   jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(window)).items()
                   if k not in ('finite', 'nonfinite_steps')}
        summary['train/nonfinite_steps'] = int(jax.device_get(window[-1]['nonfinite_steps']))
        window = []
        summary['train/learning_rate'] = float(learning_rate(done - 1))
        summary['train/skipped_records'] = experiment.skipped_records()
        writer.write_scalars(done, summary)
        if config.sampling.name == 'tce':
          class_writer.write_scalars(done, _sampler_scalars(state.sampler, class_names))
      if done % config.train.eval_every == 0 or done == num_steps:
        check_finite()
        record = evaluator.write(state, done, workdir, writer, class_writer)
      if done % config.train.checkpoint_every == 0 or done == num_steps:
        check_finite()
        _saving(checkpoints, done, lambda: checkpoints.save(
            done, args=ocp.args.StandardSave(state)))
    if record is None and start_step >= num_steps:  # already finished: evaluate once more
      record = evaluator.write(state, num_steps, workdir, writer, class_writer)
  finally:
    _saving(checkpoints, num_steps, checkpoints.wait_until_finished)
    checkpoints.close()
    writer.close()
    class_writer.close()
  return record


def restore_checkpoint(checkpoints: ocp.CheckpointManager, step: int,
                       target: TrainState) -> TrainState:
  """Restores `step` into the structure of `target`; a clear error if they do not fit."""
  try:
    return checkpoints.restore(step, args=ocp.args.StandardRestore(target))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f'The checkpoint of step {step} in {checkpoints.directory} does not fit this config '
        f'(another model, backbone, width, number of classes or sampler?): {e}') from e


def _saving(checkpoints: ocp.CheckpointManager, step: int, action: Callable[[], Any]):
  """Runs a checkpoint save (or waits for one); a failure (disk full, ...) names the place and
  the complete checkpoints. A failed save is left in orbax's temporary directory, which is
  never taken for a checkpoint and is removed at the next start."""
  try:
    action()
  except Exception as e:  # pylint: disable=broad-except
    raise OSError(f'Writing a checkpoint (up to step {step}) in {checkpoints.directory} '
                  f'failed: {e}. Complete checkpoints: {checkpoints.all_steps()}.') from e


def _check_writable(workdir: str):
  """Fails early, with the path, when the workdir cannot be created or written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{jax.process_index()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise ValueError(f'The workdir {workdir} is not writable: {e}') from e

