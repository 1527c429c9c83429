"""Test set-up: two fake CPU devices, so every test can check multi-device code."""

import os
import sys

# Must happen before JAX is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# One persistent XLA compilation cache for the whole run: the test workers, the in-process
# runs and the `python -m tce_jax.main` subprocesses compile the same tiny programs over and
# over (each run builds its own jitted step), and on XLA:CPU compiling is most of a test's
# time. The cache is keyed by the program, the flags and the versions, so a hit is the very
# executable a compile would give. Made here, in the first process (pytest-xdist's workers
# inherit the variable), and removed when that process ends; JAX_COMPILATION_CACHE_DIR set
# by the caller is used as it is and kept.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import atexit  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='tce_jax_test_xla_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import tce_jax  # noqa: E402,F401  (adds its XLA:CPU flags before JAX starts a backend)
import jax  # noqa: E402
import pytest  # noqa: E402

from tce_jax.configs import default  # noqa: E402
from tce_jax.configs import tiny  # noqa: E402


@pytest.fixture(scope='session')
def tiny_dataset_config(tmp_path_factory):
  """The tiny profile (48 train / 8 validation images of 32x64) with a temp data_dir."""
  config = tiny.apply(default.get_config())
  config.dataset.data_dir = str(tmp_path_factory.mktemp('tfds'))
  return config


def tiny_config(base, overrides=None):
  """A tiny run on the tiny profile; `overrides` maps 'section.field' to values."""
  config = base.copy_and_resolve_references()
  config.model.dropout = 0.0
  config.train.num_steps = 4
  config.train.log_every = 2
  config.train.eval_every = 4
  config.train.checkpoint_every = 2
  config.update_from_flattened_dict(overrides or {})
  return config


@pytest.fixture
def make_tiny_config(tiny_dataset_config):
  return lambda overrides=None: tiny_config(tiny_dataset_config, overrides)


def pytest_collection_modifyitems(items):
  """The slow end-to-end tests first: with two workers (make test), a long test started last
  would leave one worker idle at the end."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)  # stable


def pytest_report_header(config):
  return f'jax {jax.__version__}, devices: {jax.devices()}'


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_command(config_file, workdir, data_dir, *extra, crop=(32, 32)) -> list[str]:
  """`python -m tce_jax.main` with the tiny profile, + `extra` flags.

  (A tuple field given twice on the command line is concatenated, hence `crop`.)
  """
  return [sys.executable, '-m', 'tce_jax.main', f'--config={config_file}',
          f'--workdir={workdir}', f'--config.dataset.data_dir={data_dir}',
          *tiny.command_line_flags(input__crop_size=tuple(crop)), *extra]


def subprocess_env(devices: int = 2) -> dict[str, str]:
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
              PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))


def kill_test_command(workdir, data_dir) -> list[str]:
  """The 40-step Stochastic TCE run of the signal tests (SIGKILL, SIGTERM): a checkpoint every
  4 steps, all kept."""
  return main_command('configs/synthetic_tce.py', workdir, data_dir,
                      '--config.model.width=16',
                      '--config.train.num_steps=40', '--config.train.log_every=4',
                      '--config.train.eval_every=40', '--config.train.checkpoint_every=4',
                      '--config.train.keep_checkpoints=20', crop=(64, 64))


@pytest.fixture(scope='session')
def straight_run(tmp_path_factory):
  """(workdir, data_dir) of `kill_test_command` run uninterrupted: the reference that the
  interrupted and resumed runs of the signal tests must equal bit for bit."""
  import subprocess  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('straight')
  workdir, data_dir = root / 'run', root / 'tfds'
  result = subprocess.run(kill_test_command(workdir, data_dir), cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  return workdir, data_dir
