"""The run directory: one run at a time (a lock), writable before work starts, and the record
of the configs it ran with (config.json and its history), checked when a run resumes.

WORKDIR/
  .lock                   {"host", "pid", "since"} of the process training in it
  config.json             the config in effect (what `evaluate` and `report` read)
  config_history/<step>.json
                          each config the run used, named by the step it took effect at
                          (0.json is the original; never overwritten)
  environment/<step>.json the code, packages and machine of each training process, named by
                          the step it started at: XLA:CPU compiles for the host's CPU, so a
                          run re-trained on another CPU differs in its last bits (and after
                          thousands of steps, in its metrics); this says where it came from
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import threading
import time
from typing import Any, Iterator

from absl import logging
from flax import traverse_util
import ml_collections

from tce_jax import records
from tce_jax.configs import default

LOCK = '.lock'
HEARTBEAT_S = 30.0  # the holder touches the lock this often
STALE_AFTER_S = 600.0  # a lock of another host untouched this long is a dead holder's

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
  hold a checkpoint's longest file name."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f'The workdir {workdir} is not writable: {e}') from e
  longest = os.path.join(os.path.abspath(workdir), _LONGEST_CHECKPOINT_PATH)
  limit = os.pathconf(workdir, 'PC_PATH_MAX')
  if len(longest) >= limit:
    raise WorkdirError(
        f'The workdir path is {len(os.path.abspath(workdir))} characters long: the checkpoint '
        f'files under it would reach {len(longest)}, over the file system\'s limit of {limit}. '
        'Use a shorter --workdir.')


# ---------------------------------------------------------------------------------------
# The lock.

def _holder() -> dict[str, Any]:
  return {'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.time()}


def _alive(holder: dict[str, Any], age_s: float) -> bool:
  """Whether the process that wrote `holder` may still run."""
  if holder.get('host') != socket.gethostname():
    return age_s < STALE_AFTER_S  # another host: alive while it keeps the heartbeat
  try:
    os.kill(int(holder['pid']), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, KeyError, TypeError, ValueError):
    return True  # exists but is not ours, or unreadable: assume alive
  return True


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds WORKDIR/.lock while the block runs (one process per run: multi-host runs take it
  on process 0 only). A second process fails at once, naming the holder. A holder that died
  (its pid is gone on this host, or its heartbeat stopped for STALE_AFTER_S on another) does
  not keep it: its lock is taken over, with a warning."""
  path = os.path.join(workdir, LOCK)
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          holder = json.load(f)
        age = time.time() - os.path.getmtime(path)
      except (OSError, ValueError):
        holder, age = {}, STALE_AFTER_S  # vanished or half-written: look again
      if holder and _alive(holder, age):
        raise WorkdirError(
            f'{workdir} is in use by process {holder.get("pid")} on {holder.get("host")} '
            f'(since {time.ctime(holder.get("since", 0))}; {path}). Wait for it, stop it, or '
            'use another --workdir.') from None
      if holder:
        logging.warning('Taking over the lock of a dead run (%s): %s', path, holder)
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, 'w') as f:
      json.dump(_holder(), f)
    break
  else:
    raise WorkdirError(f'Could not take the lock {path}')
  stop = threading.Event()

  def heartbeat():
    while not stop.wait(HEARTBEAT_S):
      with contextlib.suppress(OSError):
        os.utime(path)

  thread = threading.Thread(target=heartbeat, name='workdir-lock', daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


# ---------------------------------------------------------------------------------------
# The configs of a run.

def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config in effect for the run in `workdir` (its config.json) on top of this
  version's defaults: fields added since the run was made keep their default values."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist: {workdir!r} is not a training run '
                            'directory (python -m tce_jax.main writes it)')
  with open(path) as f:
    saved = json.load(f)
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


def record_config(workdir: str, config: ml_collections.ConfigDict, step: int, *,
                  allow_changes: bool = False) -> None:
  """Checks `config` against the run's saved one and records it.

  At step 0 (nothing trained yet) writes config.json and config_history/0.json. On a resume,
  a change of a field that alters the run raises WorkdirError naming each field with its old
  and new values, unless `allow_changes`; an accepted change is logged, written to
  config_history/<step>.json (the earlier entries are kept), and becomes config.json.
  """
  path = os.path.join(workdir, 'config.json')
  history = os.path.join(workdir, 'config_history')
  os.makedirs(history, exist_ok=True)
  current = config_dict(config)
  if step == 0 or not os.path.exists(path):
    if step > 0:
      logging.warning('%s is missing: the run\'s config is recorded anew at step %d.', path,
                      step)
    records.write_json(path, current)
    records.write_json(os.path.join(history, f'{step}.json'), current)
    return
  changes = config_changes(load_run_config(workdir), config)
  if not changes:
    return
  refused = harmful(changes)
  if refused and not allow_changes:
    lines = '\n'.join(f'  config.{k}: {old!r} -> {new!r}' for k, (old, new) in refused.items())
    raise WorkdirError(
        f'{workdir} holds a run made with another config (at step {step}); resuming it with '
        f'this one would change what it trains:\n{lines}\nUse another --workdir, or pass '
        f'--allow_config_changes to resume with the new values (recorded in {history}).')
  for k, (old, new) in changes.items():
    logging.warning('Resuming at step %d with config.%s changed: %r -> %r.', step, k, old, new)
  records.write_json(os.path.join(history, f'{step}.json'), current)
  records.write_json(path, current)


# ---------------------------------------------------------------------------------------
# The code, packages and machine a run trained with.

ENVIRONMENT_DIR = 'environment'
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
  directory = os.path.join(workdir, ENVIRONMENT_DIR)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'{step}.json')
  records.write_json(path, environment())
  return path


# ---------------------------------------------------------------------------------------
# TensorBoard events of steps that a resumed run redoes.

def drop_events_after(workdir: str, step: int) -> int:
  """Removes, from the run's TensorBoard event files, the events of steps after `step` (the
  checkpoint a run resumes from): the resumed run logs those steps again, and TensorBoard
  would show both. Returns the number of events dropped. A file truncated by a kill keeps its
  readable records."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (heavy; only on resume)
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top

  dropped = 0
  for name in sorted(os.listdir(workdir)):
    if not name.startswith('events.out.tfevents.') or name.endswith('.tmp'):
      continue
    path = os.path.join(workdir, name)
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
