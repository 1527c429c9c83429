"""The training loop: builds what a config describes (data, sampler, mesh, model, optimizer,
the step of tce_jax/train_step.py), resumes from the latest checkpoint, runs the steps with
CLU logging, orbax checkpoints and periodic evaluation, and records the final evaluation.
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
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax
import tqdm

from tce_jax import checkpoints as checkpoints_lib
from tce_jax import config_validation
from tce_jax import evaluator as evaluator_lib
from tce_jax import losses
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import preemption
from tce_jax import progress
from tce_jax import records
from tce_jax import rundir
from tce_jax import sampling
from tce_jax import tensorboard_layout
from tce_jax import train_step
from tce_jax import workdir as workdir_lib
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data import pipeline
from tce_jax.models import pretrained


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

  def initial_state(self) -> train_step.TrainState:
    replicated = NamedSharding(self.mesh, P())
    state = train_step.initial_train_state(self.config, self.model, self.tx, self.sampler,
                                           replicated)
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
  mesh = mesh_lib.make_mesh()
  model = models.create_model(config, spec.num_classes, train=True, axis_name=mesh_lib.AXIS)
  tx = train_step.create_optimizer(config)
  step = train_step.make_train_step(config, model, tx,
                                    train_step.make_loss_fn(config, class_weights), sampler, mesh)
  return Experiment(config, spec, train_source, eval_source, index, sampler, mesh, model, tx,
                    step)


def training_steps(experiment: Experiment, state: train_step.TrainState) -> Iterator[tuple]:
  """Runs the steps from `state.step` to the end; yields (steps done, state, metrics).

  Batches are loaded on host threads ahead of the device: `input.prefetch` steps ahead when
  the sampler draws no class; with a class-conditional sampler as soon as their class is
  drawn on the device, which is `sampling.lag` steps ahead. A yielded state is donated to the
  next step: use it (save, evaluate, read metrics) before asking for the next one.
  """
  config, sampler = experiment.config, experiment.sampler
  data_sharding = NamedSharding(experiment.mesh, P(mesh_lib.AXIS))
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
    if holds_lock and not restart_from_scratch:  # a refused resume says so at once
      workdir_lib.check_config(workdir, config, allow_changes=allow_config_changes)
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
    if restored is not None:  # said and pruned once the config is accepted
      logging.info('Resumed from the checkpoint of step %d.', start_step)
      checkpoints_lib.prune(checkpoints, config.train.keep_checkpoints)
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


def _final_record(evaluator, state: train_step.TrainState, workdir: str, writer,
                  class_writer) -> dict:
  """The evaluation of a finished run's state: its record if written, else a new one."""
  step = int(state.step)
  path = rundir.eval_path(workdir, step)
  if os.path.exists(path):
    logging.info('The run is complete at step %d; its evaluation is %s.', step, path)
    return records.read_json(path)
  return evaluator.write(train_step.model_variables(state), step, workdir, writer, class_writer)


def _train_loop(experiment: Experiment, state: train_step.TrainState, checkpoints, evaluator,
                writer, class_writer, workdir: str) -> dict:
  """The steps from the state's to config.train.num_steps, with logging, checkpoints (saved
  before each evaluation, so a failing evaluation loses nothing) and evaluations."""
  config = experiment.config
  start_step, num_steps = int(state.step), config.train.num_steps
  # Writes steps/s and uptime to TensorBoard (its console notes are dropped: `rate` says it).
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=class_writer, every_steps=config.train.log_every)
  rate = progress.Rate(start_step, num_steps)
  learning_rate = train_step.create_learning_rate_fn(config)
  devices, processes = jax.device_count(), jax.process_count()
  logging.info('Training %s from step %d to %d on %d device%s (%d process%s); backbone %s.',
               config.name, start_step, num_steps, devices, 's' * (devices > 1), processes,
               'es' * (processes > 1), pretrained.describe_init(config))
  window, unchecked, record = [], [], None
  # On a terminal: a bar with the rate and ETA, the log lines above it (else clu's lines).
  bar = tqdm.tqdm(total=num_steps, initial=start_step, unit='step',
                  desc=f'training {config.name}', disable=not progress.watched(),
                  mininterval=1.0, **progress.bar_width())

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
      if done == start_step + 1:  # the rate leaves out the first step (its compilation)
        rate.restart(done)
      if done % config.train.log_every == 0 or done == num_steps:
        check_finite()
        loss = _log_metrics(experiment, state, done, window, class_writer, rate,
                            float(learning_rate(done - 1)))
        window = []
        bar.set_postfix(loss=f'{loss:.4g}', refresh=False)
      stopping = stop.requested(done)
      if done % config.train.checkpoint_every == 0 or done == num_steps or stopping:
        check_finite()
        with rate.paused():
          checkpoints_lib.save(checkpoints, done, state)
      if stopping:
        checkpoints_lib.saving(checkpoints, done, checkpoints.wait_until_finished)
        writer.flush()
        logging.warning('Saved the checkpoint of step %d in %s; stopping (%s).', done,
                        checkpoints.directory, signal.Signals(stop.signum).name)
        raise Interrupted(stop.signum, done, workdir)
      if done % config.train.eval_every == 0 or done == num_steps:
        check_finite()
        with rate.paused():
          record = evaluator.write(train_step.model_variables(state), done, workdir, writer,
                                   class_writer)
  return record


def _log_metrics(experiment: Experiment, state: train_step.TrainState, done: int,
                 window: list[dict], class_writer, rate: progress.Rate,
                 learning_rate: float) -> float:
  """The metrics of the steps since the last log (`window`) and the sampler's scalars to
  TensorBoard, one compact line with the progress to the log (`learning_rate`: the step's);
  returns the mean loss."""
  config = experiment.config
  summary = {k: float(np.mean(v)) for k, v in
             jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(window)).items()
             if k not in ('finite', 'nonfinite_steps')}
  summary['nonfinite_steps'] = int(jax.device_get(window[-1]['nonfinite_steps']))
  summary['learning_rate'] = learning_rate
  summary['skipped_records'] = experiment.skipped_records()
  class_writer.write_scalars(done, tensorboard_layout.train_scalars(summary))
  logging.info('%s | %s', progress.metrics_line(done, summary, config.loss.name),
               rate.report(done))
  sampler_scalars = experiment.sampler.scalars(jax.device_get(state.sampler),
                                               experiment.spec.class_names)
  if sampler_scalars:
    class_writer.write_scalars(done, sampler_scalars)
  return summary['loss']
