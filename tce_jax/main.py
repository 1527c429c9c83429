"""Trains and evaluates a segmentation model: `python -m tce_jax.main --config=... --workdir=...`.

Any config field can be overridden on the command line, e.g. `--config.tce.t=1.0`.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

from tce_jax import cli
from tce_jax import evaluation
from tce_jax import rundir
from tce_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, TensorBoard logs and '
                    'evaluation JSON; a run resumes from the checkpoints found there.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('coordinator_address', None, 'Multi-host: host:port of process 0. With '
                    '--num_processes and --process_id, starts JAX\'s distributed runtime.')
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process\'s index.')
flags.DEFINE_bool('allow_config_changes', False, 'Resume a run with config values that change '
                  'what it trains (seed, loss, tilt, steps, ...); without it such a resume is '
                  'refused, naming the fields. Each accepted config is kept in '
                  'WORKDIR/config_history/<step>.json.')
flags.DEFINE_bool('restart_from_scratch', False, 'Train a workdir whose checkpoints were all '
                  'damaged again from step 0; its records move to WORKDIR/previous-<time>/ '
                  'first. Without it such a workdir is refused (its run is kept).')
flags.DEFINE_bool('distributed', False, 'Multi-host: start JAX\'s distributed runtime from the '
                  'cluster environment (SLURM, Open MPI, ...) instead of the three flags above.')
flags.DEFINE_bool('print_config', False, 'Print the effective config (the file with the '
                  'command line\'s overrides) and exit without training.')
flags.mark_flags_as_required(['config'])
flags.register_validator('workdir', lambda v: v is not None or FLAGS['print_config'].value,
                         '--workdir is required (except with --print_config)')


def initialize_distributed():
  """Starts jax.distributed before any device is used, when asked to."""
  given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise app.UsageError('--coordinator_address, --num_processes and --process_id go together')
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  elif FLAGS.distributed:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected command-line arguments: {" ".join(argv[1:])}')
  if FLAGS.print_config:
    print(FLAGS.config)
    return
  cli.quiet_libraries()
  initialize_distributed()
  # TensorFlow (imported by CLU's TensorBoard writer) must leave the GPUs to JAX.
  tf.config.experimental.set_visible_devices([], 'GPU')
  if jax.process_count() > 1:  # one process's own line (the training line gives the totals)
    logging.info('JAX process: %d / %d; local devices: %s', jax.process_index(),
                 jax.process_count(), jax.local_devices())
  try:
    record = train.train_and_evaluate(FLAGS.config, FLAGS.workdir,
                                      allow_config_changes=FLAGS.allow_config_changes,
                                      restart_from_scratch=FLAGS.restart_from_scratch)
  except train.Interrupted as e:
    logging.warning('%s', e)
    raise SystemExit(e.exit_code) from e
  except (ValueError, OSError, FloatingPointError) as e:
    cli.exit_on(e)
  if jax.process_index() == 0:
    print(summary(record, FLAGS.workdir))


def summary(record: dict, workdir: str) -> str:
  """What a finished run prints: where it is, its final numbers, and what to do next."""
  python = sys.executable  # the interpreter of this run (the venv's), runnable from any shell
  if not os.path.relpath(python).startswith('..'):
    python = os.path.relpath(python)
  tensorboard = os.path.join(os.path.dirname(python), 'tensorboard')
  return '\n'.join([
      f'\nFinished: {workdir} (step {record["step"]})',
      f'  {evaluation.headline(record)}',
      f'  record:    {rundir.eval_path(workdir, record["step"])}',
      f'  evaluate:  {python} -m tce_jax.evaluate --workdir={workdir} --flip   (with flipping; '
      '--scales=0.75,1.0,1.25 adds scales)',
      f'  compare:   {python} -m tce_jax.report --runs {workdir} OTHER_RUN ... --out REPORT_DIR',
      f'  view:      {tensorboard} --logdir {os.path.dirname(os.path.normpath(workdir)) or "."}',
  ])


if __name__ == '__main__':
  jax.config.config_with_absl()
  app.run(main, flags_parser=cli.parse_flags)
