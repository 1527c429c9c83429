"""The run directory: one run at a time (a lock), writable before work starts, and the record
of the configs it ran with (config.json and its history), checked when a run resumes.

WORKDIR/
  .lock                   {"host", "pid", "since"} of the process training in it (an OS
                          lock on the file is the lock; see `lock`)
  config.json             the config in effect (what `evaluate` and `report` read)
  config_history/<step>.json
                          each config the run used, named by the step it took effect at
                          (0.json: the config it started with; replaced only
                          by --allow_config_changes before any checkpoint)
  previous-<time>/        an earlier run's records, moved there by --restart_from_scratch
  environment/<step>.json the code, packages and machine of each training process, named by
                          the step it started at: XLA:CPU compiles for the host's CPU, so a
                          run re-trained on another CPU differs in its last bits (and after
                          thousands of steps, in its metrics); this says where it came from
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import time
from typing import Any, Iterator

from absl import logging
from flax import traverse_util
import ml_collections

from tce_jax import records
from tce_jax import rundir
from tce_jax.configs import default

LOCK = rundir.LOCK

# Fields a resumed run may change freely: where data and logs go, how often things are
# logged, evaluated and saved, evaluation's own settings, and loader resources. Every other
# field changes what the run trains, and a resume with a new value needs an explicit override.
HARMLESS_PREFIXES = ('name', 'dataset.data_dir', 'eval.', 'train.log_every',
                     'train.eval_every', 'train.checkpoint_every', 'train.keep_checkpoints',
                     'train.nonfinite', 'input.num_threads', 'input.prefetch',
                     'input.memory_cache_gb', 'input.eval_batch_size', 'input.eval_size',
                     'input.skip_bad_records',
                     'model.eval_output_stride', 'model.pretrained', 'model.require_pretrained',
                     'loss.t_warmup_steps')


class WorkdirError(ValueError):
  """The workdir cannot be used: locked by another process, not writable, or its run's
  config differs from the one given."""


# ---------------------------------------------------------------------------------------
# Writable, with room for the longest names a run writes.

# The deepest path orbax writes under checkpoints/ (a temporary step directory, its item and
# an OCDBT data file), measured on a real run, plus margin: a workdir that cannot hold it
# fails here, not at the first checkpoint.
_LONGEST_CHECKPOINT_PATH = os.path.join(
    'checkpoints', '99999999.orbax-checkpoint-tmp-9999999999999999', 'default',
    'ocdbt.process_9999', 'd', 'f' * 40)


def check_writable(workdir: str) -> None:
  """Fails early, with the path, when the workdir cannot be created or written, or cannot
  hold a checkpoint's longest file name; a refused workdir leaves no folder behind."""
  absolute = os.path.abspath(workdir)
  existing = absolute
  while not os.path.exists(existing):  # the deepest folder that exists already
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise WorkdirError(f'The workdir {workdir} cannot be created: {existing} is a file, not a '
                       'folder')
  longest = os.path.join(absolute, _LONGEST_CHECKPOINT_PATH)
  limit = os.pathconf(existing, 'PC_PATH_MAX')
  if len(longest) >= limit:
    raise WorkdirError(
        f'The workdir path is {len(absolute)} characters long: the checkpoint files under it '
        f'would reach {len(longest)}, over the file system\'s limit of {limit}. Use a shorter '
        '--workdir.')
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    created = absolute
    while created != existing:  # leave nothing behind
      with contextlib.suppress(OSError):
        os.rmdir(created)
      created = os.path.dirname(created)
    raise WorkdirError(f'The workdir {workdir} is not writable: {e.strerror or e}') from e


# ---------------------------------------------------------------------------------------
# The lock.

def _holder() -> dict[str, Any]:
  return {'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.time()}


def _read_holder(fd: int) -> dict[str, Any]:
  """The holder's {"host", "pid", "since"}, or {} while it has not written them yet."""
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or '{}')
  except (OSError, ValueError):
    return {}


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds WORKDIR/.lock while the block runs: one process per run (multi-host runs take it
  on process 0 only). A second process fails at once, naming the holder.

  The lock is the operating system's (`fcntl.flock` on the open file), so taking it is
  atomic and it dies with its holder: a process killed in any way leaves a lock file that the
  next run takes at once. The file only says who holds it. The holder removes the file while
  still holding the lock, and a process that locked a file already removed (it opened the
  path just before) sees that the path now names another file and tries again, so two
  processes never hold the lock together. On a network file system shared by several hosts
  (NFS), Linux turns flock into a whole-file POSIX lock held by the server, so the lock is
  also exclusive across hosts; a host that dies releases its locks when the server's lease on
  them ends (NFSv4: about 90 s).
  """
  path = os.path.join(workdir, LOCK)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_holder(fd)
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise WorkdirError(f'Cannot lock {path}: {e}') from None
      who = (f'process {holder.get("pid")} on {holder.get("host")} (since '
             f'{time.ctime(holder.get("since", 0))}; {path})' if holder
             else f'another process (starting; {path})')
      raise WorkdirError(f'{workdir} is in use by {who}. Wait for it, stop it, or use another '
                         '--workdir.') from None
    try:
      current = os.stat(path)
    except FileNotFoundError:
      current = None
    if current is not None and os.path.samestat(os.fstat(fd), current):
      break
    os.close(fd)  # locked a file its holder removed on release: lock the new one
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_holder()).encode(), 0)
    yield
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)  # still locked: nobody takes the removed file for a free lock
    os.close(fd)


# ---------------------------------------------------------------------------------------
# The configs of a run.

def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config in effect for the run in `workdir` (its config.json) on top of this
  version's defaults: fields added since the run was made keep their default values."""
  path = rundir.config_path(workdir)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not a training run '
                            'directory (python -m tce_jax.main writes it)')
  saved = records.read_json(path)
  config = default.get_config()
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


def config_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON data (what config.json holds)."""
  return json.loads(config.to_json_best_effort())


def _flat(tree: dict) -> dict[str, Any]:
  flat = traverse_util.flatten_dict(tree, sep='.')
  return {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}


def config_changes(saved: ml_collections.ConfigDict,
                   config: ml_collections.ConfigDict) -> dict[str, tuple]:
  """'field' -> (saved value, new value) for each field whose value differs."""
  old, new = _flat(config_dict(saved)), _flat(config_dict(config))
  return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)}


def harmful(changes: dict[str, tuple]) -> dict[str, tuple]:
  """The changes that alter what the run trains (see HARMLESS_PREFIXES)."""
  return {k: v for k, v in changes.items()
          if not any(k == p or (p.endswith('.') and k.startswith(p)) for p in HARMLESS_PREFIXES)}


def check_config(workdir: str, config: ml_collections.ConfigDict, *, step: int | None = None,
                 allow_changes: bool = False) -> dict[str, tuple]:
  """The changes of `config` against the run's saved config ({} for a new run). A change of
  a field that alters the run raises WorkdirError naming each field with its old and new
  values, unless `allow_changes`; `step` is the step the run resumes at (default: its
  latest checkpoint's, for the message). Called before the experiment is built, so that a
  refused resume says so at once, and again by `record_config`."""
  if not os.path.exists(rundir.config_path(workdir)):
    return {}
  changes = config_changes(load_run_config(workdir), config)
  refused = harmful(changes)
  if refused and not allow_changes:  # at step 0 too: a run that died before its checkpoint
    if step is None:
      step = max(rundir.checkpoint_steps(workdir), default=0)
    fields = '; '.join(f'config.{k}: {old!r} -> {new!r}' for k, (old, new) in refused.items())
    history = os.path.dirname(rundir.config_history_path(workdir, step))
    raise WorkdirError(
        f'{workdir} holds a run made with another config (at step {step}); resuming it with '
        f'this one would change what it trains ({fields}). Use another --workdir, or pass '
        f'--allow_config_changes to resume with the new values (recorded in {history}).')
  return changes


def record_config(workdir: str, config: ml_collections.ConfigDict, step: int, *,
                  allow_changes: bool = False) -> None:
  """Checks `config` against the run's saved one (`check_config`) and records it.

  A new run writes config.json and config_history/0.json. A workdir that already holds a
  config (a resume, or a run that died before its first checkpoint and starts again at step
  0) is compared with it; an accepted change is logged, written to
  config_history/<step>.json, and becomes config.json (at step 0, where nothing trained was
  kept, it replaces 0.json; otherwise earlier entries are kept).
  """
  path = rundir.config_path(workdir)
  os.makedirs(os.path.dirname(rundir.config_history_path(workdir, step)), exist_ok=True)
  current = config_dict(config)
  if not os.path.exists(path):
    if step > 0:
      logging.warning('%s is missing: the run\'s config is recorded anew at step %d.', path,
                      step)
    records.write_json(path, current)
    records.write_json(rundir.config_history_path(workdir, step), current)
    return
  changes = check_config(workdir, config, step=step, allow_changes=allow_changes)
  for k, (old, new) in changes.items():
    logging.warning('Resuming at step %d with config.%s changed: %r -> %r.', step, k, old, new)
  if changes:
    records.write_json(rundir.config_history_path(workdir, step), current)
    records.write_json(path, current)


def check_fresh_start(workdir: str, damaged: list[str], *, restart: bool) -> None:
  """Called when a run finds no checkpoint to resume from. A workdir whose checkpoints were
  all damaged (`damaged`: where they were moved) still holds its run: without `restart` this
  refuses to train it from step 0 (WorkdirError naming what is where); with it, the run's
  records move to WORKDIR/previous-<time>/ (nothing is deleted) and the workdir starts anew.
  """
  if not damaged:
    return
  if not restart:
    raise WorkdirError(
        f'{workdir} holds a run whose checkpoints were all damaged (moved to '
        f'{", ".join(damaged)}); its records (config.json, config_history/, eval/) are kept. '
        'To train it again from step 0, pass --restart_from_scratch (its records move to '
        f'{workdir}/previous-<time>/ first), or use another --workdir.')
  previous = os.path.join(workdir, rundir.PREVIOUS_PREFIX + time.strftime('%Y%m%d-%H%M%S'))
  os.makedirs(previous)
  for name in rundir.records_of(workdir):
    os.rename(os.path.join(workdir, name), os.path.join(previous, name))
  os.makedirs(os.path.join(previous, rundir.CHECKPOINTS))
  for path in damaged:
    os.rename(path, os.path.join(previous, rundir.CHECKPOINTS, os.path.basename(path)))
  logging.warning('Restarting %s from step 0: the earlier run\'s records and damaged '
                  'checkpoints moved to %s.', workdir, previous)


# ---------------------------------------------------------------------------------------
# The code, packages and machine a run trained with.

ENVIRONMENT_DIR = rundir.ENVIRONMENT
# Distribution names, each with the alternatives that install the same module.
_PACKAGES = {'jax': (), 'jaxlib': (), 'flax': (), 'optax': (), 'orbax-checkpoint': (),
             'numpy': (), 'tensorflow': ('tensorflow-cpu',), 'tensorflow-datasets': (),
             'clu': (), 'ml-collections': ()}


def _cpu() -> dict[str, Any]:
  """The host CPU (Linux): its model, family / model number / stepping and microcode (a VM's
  model name can be as vague as 'AMD EPYC'), instruction-set flags, which decide the code
  XLA:CPU emits, and cache sizes, from which Eigen's kernels (XLA:CPU's convolutions here)
  pick their block sizes, and so the order in which they add up a convolution's terms."""
  keys = {'model name': 'model', 'cpu family': 'family', 'model': 'model_number',
          'stepping': 'stepping', 'microcode': 'microcode'}
  info = dict.fromkeys(keys.values())
  info['model'] = platform.processor() or None
  flags = []
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        key, value = key.strip(), value.strip()
        if not key:  # the first processor's block ends
          break
        if key in keys and value:
          info[keys[key]] = value
        elif key == 'flags':
          flags = sorted(value.split())
  except OSError:
    pass
  caches = []
  for index in sorted(glob.glob('/sys/devices/system/cpu/cpu0/cache/index[0-9]*')):
    try:
      parts = []
      for name in ('level', 'type', 'size'):
        with open(os.path.join(index, name)) as f:
          parts.append(f.read().strip())
    except OSError:
      continue
    caches.append(' '.join(parts))  # e.g. '2 Unified 1024K'
  return {**info, 'count': os.cpu_count(), 'flags': flags, 'caches': caches}


def _code() -> dict[str, Any]:
  """The git commit of the tce_jax checkout and whether it had uncommitted changes (None
  where git cannot say, e.g. an installed wheel)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def git(*args: str) -> str | None:
    try:
      return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True,
                            timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
      return None

  commit = git('rev-parse', 'HEAD')
  status = git('status', '--porcelain', '--untracked-files=no') if commit else None
  return {'commit': commit.strip() if commit else None,
          'modified': None if status is None else bool(status.strip())}


def environment() -> dict[str, Any]:
  """The code, package versions, devices and machine this process trains with."""
  import jax  # pylint: disable=g-import-not-at-top

  packages = {}
  for name, alternatives in _PACKAGES.items():
    packages[name] = None
    for distribution in (name, *alternatives):
      try:
        version = importlib.metadata.version(distribution)
      except importlib.metadata.PackageNotFoundError:
        continue
      packages[name] = version if distribution == name else f'{version} ({distribution})'
      break
  return {**_holder(), 'code': _code(),
          'python': platform.python_version(), 'packages': packages,
          'platform': platform.platform(), 'cpu': _cpu(),
          'devices': sorted({d.device_kind for d in jax.devices()}),
          'device_count': jax.device_count(), 'process_count': jax.process_count(),
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def record_environment(workdir: str, step: int) -> str:
  """Writes environment() to WORKDIR/environment/<step>.json (the step this process starts
  training at; a resume on another machine adds its own entry) and returns the path."""
  path = rundir.environment_path(workdir, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  records.write_json(path, environment())
  return path


# ---------------------------------------------------------------------------------------
# TensorBoard events of steps that a resumed run redoes.

def drop_events_after(workdir: str, step: int) -> int:
  """Removes, from the run's TensorBoard event files, the events of steps after `step` (the
  checkpoint a run resumes from): the resumed run logs those steps again, and TensorBoard
  would show both. Returns the number of events dropped. A file truncated by a kill keeps its
  readable records."""
  paths = rundir.event_files(workdir)
  if not paths:
    return 0
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (heavy; only when needed)
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top

  dropped = 0
  for path in paths:
    kept, removed = [], 0
    try:
      for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        event = event_pb2.Event.FromString(raw)
        if event.step > step and event.HasField('summary'):
          removed += 1
        else:
          kept.append(raw)
    except tf.errors.DataLossError:
      removed += 1  # a truncated last record
    if removed:
      with tf.io.TFRecordWriter(f'{path}.tmp') as f:
        for raw in kept:
          f.write(raw)
      os.replace(f'{path}.tmp', path)
      dropped += removed
  if dropped:
    logging.info('Dropped %d TensorBoard events after step %d (redone by this resume).',
                 dropped, step)
  return dropped
