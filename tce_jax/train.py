"""Training and evaluation loop: data-parallel steps under `jax.shard_map`, CLU logging, orbax.

The train step is per-device code, as with `pmap`: gradients and metrics are averaged with
`lax.pmean` over the mesh axis 'batch', BatchNorm statistics are synchronised through the same
axis name, and the losses complete their reductions over it, so N devices compute exactly the
global-batch loss of one device. `jax.shard_map` (with `check_vma=False`, i.e. pmap's
semantics) maps it over a 1-D mesh of all devices of all processes inside `jax.jit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
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
import tqdm

from tce_jax import checkpoints as checkpoints_lib
from tce_jax import config_validation
from tce_jax import evaluator as evaluator_lib
from tce_jax import labels as labels_lib
from tce_jax import losses
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import preemption
from tce_jax import progress
from tce_jax import records
from tce_jax import rundir
from tce_jax import sampling
from tce_jax import tensorboard_layout
from tce_jax import workdir as workdir_lib
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data import pipeline
from tce_jax.models import pretrained

AXIS = mesh_lib.AXIS  # the mesh axis the batch is split over
_DROPOUT_STREAM = 0  # random stream of dropout (the samplers' class draws use stream 1)


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: model, optimizer, sampler and the loader's position."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  sampler: Any  # the sampler's state (tce_jax.sampling); {} for a stateless one
  class_queue: jax.Array  # [lag] int32: classes drawn for steps step .. step+lag-1 ([-1]: none)
  key: jax.Array  # uint32 [2] base key of dropout and class draws
  nonfinite_steps: jax.Array  # steps whose loss or gradients were not finite (skipped)


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Polynomial ("poly") decay from the base rate to 0 over the run."""
  return optax.polynomial_schedule(init_value=config.train.learning_rate, end_value=0.0,
                                   power=config.train.poly_power,
                                   transition_steps=config.train.num_steps)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The update rule of `config.train.optimizer`, on the poly learning-rate schedule.

  'sgd' (the paper's recipes): momentum, with the L2 weight decay added to the gradient
  (torch.optim.SGD style). 'adamw': Adam (beta1 = `train.momentum`, beta2 = 0.999) with the
  weight decay decoupled from the gradient (torch.optim.AdamW style), so `train.weight_decay`
  means a different thing there (typical values: 5e-4 for SGD, 1e-2 for AdamW).
  """
  parts = []
  if config.train.grad_clip_norm is not None:
    parts.append(optax.clip_by_global_norm(config.train.grad_clip_norm))
  learning_rate = create_learning_rate_fn(config)
  if config.train.optimizer == 'adamw':
    parts.append(optax.adamw(learning_rate, b1=config.train.momentum, b2=0.999,
                             weight_decay=config.train.weight_decay))
  else:
    if config.train.weight_decay:
      parts.append(optax.add_decayed_weights(config.train.weight_decay))
    parts.append(optax.sgd(learning_rate, momentum=config.train.momentum))
  return optax.chain(*parts)


def make_loss_fn(config: ml_collections.ConfigDict,
                 class_weights: np.ndarray | None) -> Callable[..., jax.Array]:
  """(logits, labels, step, axis_name) -> global batch loss of `config.loss`.

  What the loss needs comes from its `losses.LOSSES` entry: the tilt t (config.tce.t, ramped
  over config.tce.t_warmup_steps), the per-class weights (`class_weights`, computed by the
  entry's own function from the class index), and options read from config fields.
  """
  loss = losses.LOSSES[config.loss.name]
  kwargs = {arg: config_validation.value(config, field) for arg, field in loss.options.items()}
  if loss.class_weights is not None:
    kwargs[loss.weights_arg] = class_weights
  warmup = config.tce.t_warmup_steps

  def loss_fn(logits, labels, step, axis_name):
    if not loss.tilted:
      return loss(logits, labels, axis_name=axis_name, **kwargs)
    t = config.tce.t
    if warmup:
      t = t * jnp.minimum(1.0, step / warmup)
    return loss(logits, labels, t, axis_name=axis_name, **kwargs)

  return loss_fn


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, tx, loss_fn,
               sampler: sampling.Sampler, config: ml_collections.ConfigDict,
               axis_name: str = AXIS):
  """One SGD step on this device's share of the global batch (runs under shard_map).

  Returns the new state, the global-batch metrics, and the class the sampler drew for
  step + lag after its update with this batch (-1 for a sampler that draws none).
  """
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  images = pipeline.normalize(batch['image'], dtype)
  labels = batch['label'].astype(jnp.int32)
  dropout_key = jax.random.fold_in(
      jax.random.fold_in(jax.random.fold_in(state.key, _DROPOUT_STREAM), state.step),
      lax.axis_index(axis_name))

  def objective(params):
    outputs, new_vars = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                    images, train=True, rngs={'dropout': dropout_key},
                                    mutable=['batch_stats'])
    logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
    loss = loss_fn(logits, labels, state.step, axis_name)
    if aux_logits is not None:  # UPerNet's auxiliary head
      loss = loss + config.model.aux_weight * loss_fn(aux_logits, labels, state.step, axis_name)
    return loss, (logits, new_vars)

  (loss, (logits, new_vars)), grads = jax.value_and_grad(
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
  mcce = losses.cross_entropy(logits, labels, axis_name=axis_name)  # logged whatever the loss
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) & (labels != labels_lib.IGNORE_INDEX))
  valid = jnp.sum(labels != labels_lib.IGNORE_INDEX)
  metrics = {'loss': loss, 'mcce': mcce, 'grad_norm': grad_norm, 'finite': finite,
             'nonfinite_steps': nonfinite_steps,
             'pixel_accuracy': 100.0 * lax.psum(correct, axis_name) / jnp.maximum(
                 lax.psum(valid, axis_name), 1)}
  sampler_state = unless_nonfinite(sampler.update(
      state.sampler, cls=state.class_queue[0], logits=logits, labels=labels, mcce=mcce,
      axis_name=axis_name), state.sampler)
  class_queue, next_class = sampler.advance(sampler_state, state.class_queue, state.key,
                                            state.step)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, sampler=sampler_state, class_queue=class_queue,
                            nonfinite_steps=nonfinite_steps)
  return new_state, metrics, next_class


def make_train_step(config: ml_collections.ConfigDict, model, tx, loss_fn,
                    sampler: sampling.Sampler, mesh):
  """`train_step` mapped over `mesh` (state replicated, batch split), jitted, state donated."""
  step_fn = functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn, sampler=sampler,
                              config=config)
  return jax.jit(
      jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P(), P()),
                    check_vma=False),
      in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))),
      donate_argnums=(0,))


init_variables = models.init_variables  # its home is tce_jax.models


def init_compiler_options() -> dict[str, Any] | None:
  """XLA options for compiling create_train_state: optimisation level 2 on CPU.

  That program runs once, and compiling it is mostly compiling threefry for every parameter
  tensor: at XLA:CPU's default level 3 the tiny test model's took ~36-41 s on a loaded 2-core
  machine, at level 2 ~11 s, with the same state bit for bit (tests/test_train.py checks
  it on several models and samplers; level 0 is not: last-bit differences in the kernels).
  Other backends keep their defaults (not measured there)."""
  return {'xla_backend_optimization_level': 2} if jax.default_backend() == 'cpu' else None


def create_train_state(config: ml_collections.ConfigDict, model, tx,
                       sampler: sampling.Sampler) -> TrainState:
  """Initial parameters, optimizer and sampler state (with its first `lag` draws)."""
  key = jax.random.PRNGKey(config.seed)
  variables = init_variables(config, model, key)
  params = variables['params']
  sampler_state = sampler.init()
  return TrainState(step=jnp.int32(0), params=params, batch_stats=variables['batch_stats'],
                    opt_state=tx.init(params), sampler=sampler_state,
                    class_queue=sampler.initial_queue(sampler_state, key), key=key,
                    nonfinite_steps=jnp.int32(0))


def initial_train_state(config: ml_collections.ConfigDict, model, tx, sampler: sampling.Sampler,
                        sharding: jax.sharding.Sharding) -> TrainState:
  """create_train_state compiled with init_compiler_options(), its output laid out as
  `sharding`."""
  init = jax.jit(functools.partial(create_train_state, config, model, tx, sampler),
                 out_shardings=sharding)
  return init.lower().compile(init_compiler_options())()


make_mesh = mesh_lib.make_mesh  # its home is tce_jax.mesh


@dataclasses.dataclass
class Experiment:
  """What a config builds: data sources, class index, sampler, mesh, model, optimizer, step."""
  config: ml_collections.ConfigDict
  spec: datasets.DatasetSpec
  train_source: datasets.SegmentationSource
  eval_source: datasets.SegmentationSource
  class_index: class_index_lib.ClassIndex | None
  sampler: sampling.Sampler
  mesh: jax.sharding.Mesh
  model: Any
  tx: optax.GradientTransformation
  train_step: Callable

  def initial_state(self) -> TrainState:
    replicated = NamedSharding(self.mesh, P())
    state = initial_train_state(self.config, self.model, self.tx, self.sampler, replicated)
    weights = pretrained.weights_dir(self.config)
    if weights is not None:  # ImageNet weights for the backbone
      variables = pretrained.apply_backbone(
          {'params': state.params, 'batch_stats': state.batch_stats},
          pretrained.load_backbone(weights))
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
        skip_bad_records=c.input.skip_bad_records,
        class_crop_retries=c.sampling.class_crop.retries,
        class_crop_min_pixels=c.sampling.class_crop.min_pixels)

  def skipped_records(self) -> int:
    """Bad training records replaced so far in this process (config.input.skip_bad_records)."""
    return self.train_batches.skipped


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Validates `config` and builds everything training needs (no compilation yet)."""
  config_validation.validate_config(config, jax.device_count(), jax.process_count())
  spec = datasets.get_spec(config)
  loss = losses.LOSSES[config.loss.name]
  needs_index = (sampling.SAMPLERS[config.sampling.name].needs_class_index
                 or loss.needs_class_index)
  if jax.process_count() > 1:  # process 0 generates / indexes first; the others then read
    if jax.process_index() == 0:
      source = datasets.load_source(config, config.dataset.train_split)
      if needs_index:
        class_index_lib.load_class_index(source)
    multihost_utils.sync_global_devices('dataset and class index ready')
  cache_bytes = int(config.input.memory_cache_gb * 2**30)
  train_source = datasets.load_source(config, config.dataset.train_split).keep_in_memory(
      cache_bytes)
  eval_source = datasets.load_source(config, config.dataset.eval_split).keep_in_memory(
      cache_bytes)
  index = class_index_lib.load_class_index(train_source) if needs_index else None
  class_weights = (loss.class_weights(index.pixel_counts)
                   if loss.class_weights is not None else None)
  if index is not None and config.sampling.min_pixels:  # D_c: > min_pixels pixels of c
    sparse = index.sparse_classes(config.sampling.min_pixels)
    if len(sparse):
      logging.warning('No training image holds more than config.sampling.min_pixels=%d '
                      'pixels of %s: their D_c keeps every image that contains them.',
                      config.sampling.min_pixels,
                      ', '.join(spec.class_names[c] for c in sparse))
    index = index.with_min_pixels(config.sampling.min_pixels)
  sampler = sampling.create_sampler(config, num_classes=spec.num_classes, class_index=index)
  mesh = make_mesh()
  model = models.create_model(config, spec.num_classes, train=True, axis_name=AXIS)
  tx = create_optimizer(config)
  step = make_train_step(config, model, tx, make_loss_fn(config, class_weights), sampler, mesh)
  return Experiment(config, spec, train_source, eval_source, index, sampler, mesh, model, tx,
                    step)


def training_steps(experiment: Experiment, state: TrainState) -> Iterator[tuple]:
  """Runs the steps from `state.step` to the end; yields (steps done, state, metrics).

  Batches are loaded on host threads ahead of the device: `input.prefetch` steps ahead when
  the sampler draws no class; with a class-conditional sampler as soon as their class is
  drawn on the device, which is `sampling.lag` steps ahead. A yielded state is donated to the
  next step: use it (save, evaluate, read metrics) before asking for the next one.
  """
  config, sampler = experiment.config, experiment.sampler
  data_sharding = NamedSharding(experiment.mesh, P(AXIS))
  start, num_steps = int(state.step), config.train.num_steps
  ahead = sampler.lag if sampler.class_conditional else config.input.prefetch
  prefetcher = pipeline.Prefetcher(experiment.train_batches, config.input.num_threads)
  try:
    if sampler.class_conditional:  # the classes of the next `lag` steps are already drawn
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
        prefetcher.submit(step + ahead, next_class if sampler.class_conditional else None)
      yield step + 1, state, metrics
  finally:
    prefetcher.close()


def model_variables(state: TrainState) -> dict:
  """The variables evaluation and inference need: {'params', 'batch_stats'}."""
  return {'params': state.params, 'batch_stats': state.batch_stats}


Interrupted = preemption.Interrupted  # where main catches it


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       allow_config_changes: bool = False,
                       restart_from_scratch: bool = False) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the last eval.

  One process at a time per workdir (a lock). A resume compares `config` with the run's
  saved one and refuses changes that alter the run unless `allow_config_changes`. A run
  whose checkpoints were all damaged is not trained again from step 0 unless
  `restart_from_scratch` (its records are then moved aside, not deleted). SIGTERM /
  SIGINT save a checkpoint of the step reached and raise `Interrupted`.
  """
  config_validation.validate_config(config, jax.device_count(), jax.process_count())
  workdir = os.path.abspath(workdir)
  workdir_lib.check_writable(workdir)
  holds_lock = jax.process_index() == 0  # the processes of one run share process 0's lock
  with workdir_lib.lock(workdir) if holds_lock else contextlib.nullcontext():
    return _train_and_evaluate(build_experiment(config), workdir, allow_config_changes,
                               restart_from_scratch)


def _train_and_evaluate(experiment: Experiment, workdir: str, allow_config_changes: bool,
                        restart_from_scratch: bool) -> dict:
  config, class_names = experiment.config, experiment.spec.class_names
  lead = jax.process_index() == 0  # writes the records
  state = experiment.initial_state()
  checkpoints = checkpoints_lib.manager(workdir, max_to_keep=config.train.keep_checkpoints,
                                        create=True)
  writer = class_writer = None
  try:
    restored = checkpoints_lib.restore_latest(checkpoints, state)
    if restored is not None:
      state = restored
      logging.info('Resumed from the checkpoint of step %d.', int(state.step))
      checkpoints_lib.prune(checkpoints, config.train.keep_checkpoints)
    elif lead:  # all checkpoints damaged earlier: the run is kept unless told to start over
      workdir_lib.check_fresh_start(workdir, rundir.damaged_checkpoints(workdir),
                                    restart=restart_from_scratch)
    start_step, num_steps = int(state.step), config.train.num_steps
    if lead:  # what `evaluate` and `report` read back; refuses a drifted config
      workdir_lib.record_config(workdir, config, start_step,
                                allow_changes=allow_config_changes)
      workdir_lib.record_environment(workdir, start_step)
      # Events a rerun writes again: after the checkpoint, or all of a run that kept none.
      workdir_lib.drop_events_after(workdir, start_step if start_step > 0 else -1)
    evaluator = evaluator_lib.Evaluator(config, experiment.eval_source, class_names,
                                        experiment.mesh)
    writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
    # Per-class scalars go to TensorBoard only (they would flood the log).
    class_writer = (metric_writers.SummaryWriter(workdir) if lead
                    else metric_writers.MultiWriter([]))
    if start_step >= num_steps:  # nothing to train: the record of the state's own step
      return _final_record(evaluator, state, workdir, writer, class_writer)
    if start_step == 0 and lead:
      tensorboard_layout.write(workdir)
    if start_step == 0:  # to TensorBoard's HParams page only (a very long console line)
      class_writer.write_hparams({k: v if isinstance(v, (int, float, str, bool)) else str(v)
                            for k, v in traverse_util.flatten_dict(config.to_dict(),
                                                                   sep='.').items()})
    return _train_loop(experiment, state, checkpoints, evaluator, writer, class_writer,
                       workdir)
  finally:
    checkpoints_lib.saving(checkpoints, int(checkpoints.latest_step() or 0),
                           checkpoints.wait_until_finished)
    checkpoints.close()
    for w in (writer, class_writer):
      if w is not None:
        w.close()


def _final_record(evaluator, state: TrainState, workdir: str, writer, class_writer) -> dict:
  """The evaluation of a finished run's state: its record if written, else a new one."""
  step = int(state.step)
  path = rundir.eval_path(workdir, step)
  if os.path.exists(path):
    logging.info('The run is complete at step %d; its evaluation is %s.', step, path)
    return records.read_json(path)
  return evaluator.write(model_variables(state), step, workdir, writer, class_writer)


def _train_loop(experiment: Experiment, state: TrainState, checkpoints, evaluator, writer,
                class_writer, workdir: str) -> dict:
  """The steps from the state's to config.train.num_steps, with logging, checkpoints (saved
  before each evaluation, so a failing evaluation loses nothing) and evaluations."""
  config, class_names = experiment.config, experiment.spec.class_names
  start_step, num_steps = int(state.step), config.train.num_steps
  # Logs "N steps/s, P% (step/total), ETA"; steps/s and uptime go to TensorBoard only.
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=class_writer, every_steps=config.train.log_every)
  learning_rate = create_learning_rate_fn(config)
  logging.info('Training %s from step %d to %d on %d devices (%d processes); backbone %s.',
               config.name, start_step, num_steps, jax.device_count(), jax.process_count(),
               pretrained.describe_init(config))
  window, unchecked, record = [], [], None
  # On a terminal: a bar with the rate and ETA, the log lines above it (else clu's lines).
  bar = tqdm.tqdm(total=num_steps, initial=start_step, unit='step',
                  desc=f'training {config.name}', disable=not progress.watched(),
                  dynamic_ncols=True, mininterval=1.0)

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

  with preemption.StopSignals() as stop, progress.above_bars(not bar.disable), bar:
    for done, state, metrics in training_steps(experiment, state):
      window.append(metrics)
      unchecked.append((done, metrics['finite']))
      report_progress(done)
      bar.update(1)
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
        bar.set_postfix(loss=f'{summary["train/loss"]:.4g}', refresh=False)
        sampler_scalars = experiment.sampler.scalars(jax.device_get(state.sampler),
                                                     class_names)
        if sampler_scalars:
          class_writer.write_scalars(done, sampler_scalars)
      stopping = stop.requested(done)
      if done % config.train.checkpoint_every == 0 or done == num_steps or stopping:
        check_finite()
        checkpoints_lib.save(checkpoints, done, state)
      if stopping:
        checkpoints_lib.saving(checkpoints, done, checkpoints.wait_until_finished)
        writer.flush()
        logging.warning('Saved the checkpoint of step %d in %s; stopping (%s).', done,
                        checkpoints.directory, signal.Signals(stop.signum).name)
        raise Interrupted(stop.signum, done, workdir)
      if done % config.train.eval_every == 0 or done == num_steps:
        check_finite()
        record = evaluator.write(model_variables(state), done, workdir, writer, class_writer)
  return record
