"""Evaluates a run's checkpoint: `python -m tce_jax.evaluate --workdir=RUN`.

Restores the latest (or `--checkpoint_step`) checkpoint of the run, evaluates it on a split
with the run's config (its protocol overridable by flags: output stride, scales, flip,
whole / slide, resolution), and writes RUN/eval/<step>.json and the same numbers to
TensorBoard, exactly as training's periodic evaluation does. A split other than the config's
eval split writes RUN/eval/<step>_<split>.json, and a protocol other than the run's
RUN/eval/<step>[_<split>]_<tag>.json (e.g. 4_ms0.75-1-1.25_flip.json): such evaluations never
replace the run's own record, which `report` reads.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app
from absl import flags
from clu import metric_writers
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

from tce_jax import checkpoints
from tce_jax import cli
from tce_jax import config_validation
from tce_jax import evaluation
from tce_jax import evaluator as evaluator_lib
from tce_jax import inference
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import records
from tce_jax import rundir
from tce_jax import workdir as workdir_lib
from tce_jax.data import datasets

FLAGS = flags.FLAGS
load_run_config = workdir_lib.load_run_config  # the config a run was trained with


def _define_flags():
  """Command-line flags, defined only when run as a program (importing defines none)."""
  flags.DEFINE_string('workdir', None, 'Run directory (holds config.json and checkpoints/).')
  flags.DEFINE_integer('checkpoint_step', None, 'Checkpoint to evaluate (default: the latest).')
  flags.DEFINE_string('split', None, 'Split to evaluate (default: the config\'s eval split).')
  flags.DEFINE_integer('output_stride', None, 'Override config.model.eval_output_stride.')
  flags.DEFINE_list('scales', None, 'Override config.eval.scales, e.g. 0.75,1.0,1.25.')
  flags.DEFINE_bool('flip', None, 'Override config.eval.flip.')
  flags.DEFINE_enum('mode', None, ['whole', 'slide'], 'Override config.eval.mode.')
  flags.DEFINE_list('window', None, 'Override config.eval.window (slide), e.g. 769,769.')
  flags.DEFINE_list('stride', None, 'Override config.eval.stride (slide), e.g. 513,513.')
  flags.DEFINE_enum('resolution', None, ['resized', 'original'],
                    'Override config.eval.resolution (the scored label size).')
  flags.DEFINE_string('data_dir', None, 'Override config.dataset.data_dir.')
  flags.mark_flags_as_required(['workdir'])


def restore(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
            mesh: jax.sharding.Mesh | None = None) -> tuple[dict, int]:
  """(model variables {'params', 'batch_stats'}, step) of a run's checkpoint `step` (None:
  the latest), replicated over `mesh` (default: all devices).

  Builds only the model: no training data, class index, optimizer or sampler is needed, and
  the training batch size need not suit this machine's devices.
  """
  config_validation.validate_model_config(config)
  num_classes = datasets.get_spec(config).num_classes
  mesh = mesh_lib.make_mesh() if mesh is None else mesh
  model = models.create_model(config, num_classes, train=True)  # + auxiliary heads
  shapes = jax.eval_shape(lambda: models.init_variables(config, model, jax.random.PRNGKey(0)))
  replicated = NamedSharding(mesh, P())
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        {'params': shapes['params'], 'batch_stats': shapes['batch_stats']})
  directory = checkpoints.directory(workdir)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'No checkpoint in {directory}')
  with checkpoints.manager(workdir) as manager:
    step = manager.latest_step() if step is None else step  # None: restore says none exists
    variables = checkpoints.restore(manager, step, target, partial=True)
  return variables, step


def predict_labels(config: ml_collections.ConfigDict, workdir: str,
                   images: Sequence[np.ndarray], step: int | None = None) -> list[np.ndarray]:
  """The label map (uint8 class ids [H, W]) the run's checkpoint `step` (None: the latest)
  predicts for each image [H, W, 3]: one pass at full resolution, scale 1, no flip, at the
  config's evaluation output stride. What the report's qualitative figure shows."""
  variables, _ = restore(config, workdir, step)
  model = models.create_model(config, datasets.get_spec(config).num_classes, train=False,
                              output_stride=config.model.eval_output_stride)
  labels = jax.jit(lambda v, x: jax.numpy.argmax(inference.predict(model, v, x), -1))
  return [np.asarray(jax.device_get(labels(variables, np.asarray(image)[None])[0]), np.uint8)
          for image in images]


def evaluate_run(workdir: str, *, step: int | None = None, split: str | None = None,
                 overrides: dict | None = None) -> dict:
  """Evaluates a checkpoint of the run in `workdir`; returns the written record."""
  run_config = workdir_lib.load_run_config(workdir)
  config = run_config.copy_and_resolve_references()
  config.update_from_flattened_dict(overrides or {})
  config_validation.validate_model_config(config)
  split = split or config.dataset.eval_split
  tag = evaluator_lib.protocol_tag(evaluator_lib.protocol(config, split),
                                   evaluator_lib.protocol(run_config, split))
  mesh = mesh_lib.make_mesh()
  variables, step = restore(config, workdir, step, mesh)
  source = datasets.load_source(config, split)
  evaluator = evaluator_lib.Evaluator(config, source, datasets.get_spec(config).class_names,
                                      mesh)
  writer = metric_writers.create_default_writer(workdir)
  class_writer = metric_writers.SummaryWriter(workdir)
  try:
    return evaluator.write(variables, step, workdir, writer, class_writer, tag=tag)
  finally:
    writer.close()
    class_writer.close()


def record_path(workdir: str, record: dict, run_config: ml_collections.ConfigDict) -> str:
  """Where `Evaluator.write` put `record`: eval/<step>[_<split>][_<tag>].json."""
  split = record['split']
  tag = evaluator_lib.protocol_tag(record['protocol'], evaluator_lib.protocol(run_config, split))
  return rundir.eval_path(workdir, record['step'],
                          rundir.record_suffix(split, run_config.dataset.eval_split, tag))


def summary(workdir: str, record: dict) -> str:
  """What `evaluate` prints: the headline numbers, the file written, and the difference to
  the run's own evaluation of that step (when it has one and this is another)."""
  run_config = workdir_lib.load_run_config(workdir)
  path = record_path(workdir, record, run_config)
  lines = [f"Evaluated: {workdir} (step {record['step']})", f'  {evaluation.headline(record)}',
           f'  record: {path}']
  own = rundir.eval_path(workdir, record['step'])
  if os.path.abspath(own) != os.path.abspath(path) and os.path.exists(own):
    before = records.read_json(own)
    lines.append(f"  against the run's own evaluation of step {record['step']} ({own}): "
                 f"mIoU {record['miou'] - before['miou']:+.2f} ({record['miou']:.2f} vs "
                 f"{before['miou']:.2f}, {before.get('split', 'validation')})")
  return '\n'.join(lines)


def main(argv):
  cli.quiet_libraries()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  overrides = {}
  if FLAGS.output_stride is not None:
    overrides['model.eval_output_stride'] = FLAGS.output_stride
  if FLAGS.scales is not None:
    overrides['eval.scales'] = tuple(float(s) for s in FLAGS.scales)
  if FLAGS.flip is not None:
    overrides['eval.flip'] = FLAGS.flip
  if FLAGS.mode is not None:
    overrides['eval.mode'] = FLAGS.mode
  for name in ('window', 'stride'):
    if getattr(FLAGS, name) is not None:
      overrides[f'eval.{name}'] = tuple(int(v) for v in getattr(FLAGS, name))
  if FLAGS.resolution is not None:
    overrides['eval.resolution'] = FLAGS.resolution
  if FLAGS.data_dir is not None:
    overrides['dataset.data_dir'] = FLAGS.data_dir
  try:
    record = evaluate_run(FLAGS.workdir, step=FLAGS.checkpoint_step, split=FLAGS.split,
                          overrides=overrides)
  except (ValueError, FileNotFoundError) as e:
    cli.exit_on(e)
  print(summary(FLAGS.workdir, record))


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
