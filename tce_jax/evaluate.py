"""Evaluates a run's checkpoint: `python -m tce_jax.evaluate --workdir=RUN`.

Restores the latest (or `--checkpoint_step`) checkpoint of the run, evaluates it on a split
with the run's config (output stride, scales and flip overridable by flags), and writes
RUN/eval/<step>.json (RUN/eval/<step>_<split>.json for a split other than the config's eval
split) and the same numbers to TensorBoard, exactly as training's periodic evaluation does.
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
import ml_collections
import orbax.checkpoint as ocp

from configs import default

from tce_jax import train

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags, defined only when run as a program (importing defines none)."""
  flags.DEFINE_string('workdir', None, 'Run directory (holds config.json and checkpoints/).')
  flags.DEFINE_integer('checkpoint_step', None, 'Checkpoint to evaluate (default: the latest).')
  flags.DEFINE_string('split', None, 'Split to evaluate (default: the config\'s eval split).')
  flags.DEFINE_integer('output_stride', None, 'Override config.model.eval_output_stride.')
  flags.DEFINE_list('scales', None, 'Override config.eval.scales, e.g. 0.75,1.0,1.25.')
  flags.DEFINE_bool('flip', None, 'Override config.eval.flip.')
  flags.DEFINE_string('data_dir', None, 'Override config.dataset.data_dir.')
  flags.mark_flags_as_required(['workdir'])


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (RUN/config.json, written at its start)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not a training run '
                            'directory (python -m tce_jax.main writes it)')
  with open(path) as f:
    saved = json.load(f)
  config = default.get_config()  # fields added since the run was made keep their defaults
  _merge(config, saved, 'config')
  return config


def _merge(config: ml_collections.ConfigDict, saved: dict, where: str):
  for key, value in saved.items():
    if key not in config:
      logging.warning('%s.%s of the saved config is unknown to this version; ignored.', where,
                      key)
    elif isinstance(value, dict):
      _merge(config[key], value, f'{where}.{key}')
    else:
      config[key] = tuple(value) if isinstance(value, list) else value  # JSON has no tuples


def restore(config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
  """(experiment, train state at `step`) of a run; the latest checkpoint when step is None."""
  experiment = train.build_experiment(config)
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  with ocp.CheckpointManager(directory) as manager:
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f'No checkpoint in {directory}')
    step = max(steps) if step is None else step
    if step not in steps:
      raise ValueError(f'--checkpoint_step={step}: {directory} has steps {sorted(steps)}')
    try:
      state = manager.restore(step, args=ocp.args.StandardRestore(experiment.initial_state()))
    except ValueError as e:
      raise ValueError(f'The checkpoint of step {step} in {directory} does not fit the model '
                       f'of its config.json (was it written by another model?): {e}') from e
  return experiment, state


def evaluate_run(workdir: str, *, step: int | None = None, split: str | None = None,
                 overrides: dict | None = None) -> dict:
  """Evaluates a checkpoint of the run in `workdir`; returns the written record."""
  config = load_run_config(workdir)
  config.update_from_flattened_dict(overrides or {})
  experiment, state = restore(config, workdir, step)
  source = experiment.eval_source
  if split is not None and split != config.dataset.eval_split:
    from tce_jax.data import datasets  # pylint: disable=g-import-not-at-top
    source = datasets.load_source(config, split)
  evaluator = train.Evaluator(config, source, experiment.spec.class_names, experiment.mesh)
  writer = metric_writers.create_default_writer(workdir)
  class_writer = metric_writers.SummaryWriter(workdir)
  try:
    return evaluator.write(state, int(state.step), workdir, writer, class_writer)
  finally:
    writer.close()
    class_writer.close()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  overrides = {}
  if FLAGS.output_stride is not None:
    overrides['model.eval_output_stride'] = FLAGS.output_stride
  if FLAGS.scales is not None:
    overrides['eval.scales'] = tuple(float(s) for s in FLAGS.scales)
  if FLAGS.flip is not None:
    overrides['eval.flip'] = FLAGS.flip
  if FLAGS.data_dir is not None:
    overrides['dataset.data_dir'] = FLAGS.data_dir
  try:
    record = evaluate_run(FLAGS.workdir, step=FLAGS.checkpoint_step, split=FLAGS.split,
                          overrides=overrides)
  except (ValueError, FileNotFoundError) as e:
    logging.error('%s', e)
    raise SystemExit(f'Error: {e}') from e
  print(json.dumps({k: record[k] for k in ('step', 'split', 'miou', 'pixel_accuracy',
                                           'fairness')}, indent=1))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
