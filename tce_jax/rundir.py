"""The layout of a run directory: the one module that names the files a run holds.

RUN/
  .lock                     the OS lock of the process training in it (`workdir.lock`)
  config.json               the config in effect (what `evaluate` and `report` read)
  config_history/<step>.json
                            each config the run used, by the step it took effect at
  environment/<step>.json   the code, packages and machine of each training process
  checkpoints/<step>/       orbax checkpoints; damaged ones renamed `corrupt-<step>-<time>`
                            (`damaged_checkpoint_path`)
  eval/<step>.json, .csv    the evaluation of `step` on the config's eval split with the
                            run's own protocol (the record the report reads)
  eval/<step>_<split>.json  on another split; eval/<step>[_<split>]_<tag>.json with another
                            protocol (multi-scale, flip: `evaluator.protocol_tag`)
  qualitative/<index>.png   stored predictions of eval-split images (the report's
                            qualitative figure), palette PNGs of class ids
  previous-<time>/          an earlier run's records, moved there by --restart_from_scratch
  events.out.tfevents.*     TensorBoard

Everything that builds one of these paths calls a function here, so that the layout can be
read (and changed) in one place. `copy_records` copies the small records of a run (what a
study commits) elsewhere.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

LOCK = '.lock'
CONFIG = 'config.json'
CONFIG_HISTORY = 'config_history'
ENVIRONMENT = 'environment'
CHECKPOINTS = 'checkpoints'
EVAL = 'eval'
QUALITATIVE = 'qualitative'
EVENTS_PREFIX = 'events.out.tfevents.'
PREVIOUS_PREFIX = 'previous-'
DAMAGED_PREFIX = 'corrupt-'  # a damaged checkpoint moved aside: corrupt-<step>-<time>


def config_path(run: str) -> str:
  return os.path.join(run, CONFIG)


def config_history_path(run: str, step: int) -> str:
  return os.path.join(run, CONFIG_HISTORY, f'{step}.json')


def environment_path(run: str, step: int) -> str:
  return os.path.join(run, ENVIRONMENT, f'{step}.json')


def checkpoints_dir(run: str) -> str:
  return os.path.join(os.path.abspath(run), CHECKPOINTS)


def damaged_checkpoint_path(run: str, step: int, stamp: str) -> str:
  """Where the damaged checkpoint of `step` is moved aside (orbax no longer lists it)."""
  return os.path.join(checkpoints_dir(run), f'{DAMAGED_PREFIX}{step}-{stamp}')


def checkpoint_steps(run: str) -> list[int]:
  """The steps of the run's checkpoint folders, read from their names (no checkpoint is
  opened: a damaged one still counts until a restore moves it aside)."""
  folder = checkpoints_dir(run)
  names = os.listdir(folder) if os.path.isdir(folder) else []
  return sorted(int(n) for n in names if n.isdigit())


def damaged_checkpoints(run: str) -> list[str]:
  """The damaged checkpoints moved aside in the run's checkpoints folder."""
  return sorted(glob.glob(os.path.join(checkpoints_dir(run), f'{DAMAGED_PREFIX}*')))


def eval_suffix(split: str | None = None, tag: str = '') -> str:
  """'' for the run's own split and protocol, '_<split>' and / or '_<tag>' otherwise."""
  return (f'_{split}' if split else '') + (f'_{tag}' if tag else '')


def record_suffix(split: str, run_split: str, tag: str = '') -> str:
  """The suffix of an evaluation on `split` under protocol `tag` of a run scored on
  `run_split`: the split is named only when it is not the run's own."""
  return eval_suffix(split if split != run_split else None, tag)


def eval_path(run: str, step: int, suffix: str = '', ext: str = 'json') -> str:
  """RUN/eval/<step><suffix>.<ext> (`eval_suffix` makes the suffix)."""
  return os.path.join(run, EVAL, f'{step}{suffix}.{ext}')


def eval_steps(run: str) -> list[int]:
  """The steps that have a record on the run's own split and protocol, ascending."""
  names = (os.path.basename(p) for p in glob.glob(os.path.join(run, EVAL, '*.json')))
  return sorted(int(n[:-5]) for n in names if re.fullmatch(r'\d+\.json', n))


def qualitative_dir(run: str) -> str:
  return os.path.join(run, QUALITATIVE)


def qualitative_path(run: str, index: int) -> str:
  return os.path.join(qualitative_dir(run), f'{index}.png')


def event_files(run: str) -> list[str]:
  """The run's TensorBoard event files (not their temporary rewrites)."""
  return [os.path.join(run, n) for n in sorted(os.listdir(run))
          if n.startswith(EVENTS_PREFIX) and not n.endswith('.tmp')]


def records_of(run: str) -> list[str]:
  """The names in RUN that hold its records (what --restart_from_scratch moves aside)."""
  return [n for n in sorted(os.listdir(run))
          if n in (CONFIG, CONFIG_HISTORY, EVAL, ENVIRONMENT, QUALITATIVE)
          or n.startswith(EVENTS_PREFIX)]


_RECORD_FILES = ((EVAL, '*.json'), (ENVIRONMENT, '*.json'), (QUALITATIVE, '*.png'))


def copy_records(run: str, target: str, *, folders: tuple[str, ...] | None = None) -> str:
  """Copies the run's small records to TARGET (created): config.json, eval/*.json,
  environment/*.json and the stored qualitative predictions, or only those of `folders`
  (e.g. (QUALITATIVE,)); returns TARGET."""
  os.makedirs(target, exist_ok=True)
  if folders is None:
    shutil.copy2(config_path(run), target)
  for folder, pattern in _RECORD_FILES:
    if folders is not None and folder not in folders:
      continue
    paths = sorted(glob.glob(os.path.join(run, folder, pattern)))
    if paths:
      os.makedirs(os.path.join(target, folder), exist_ok=True)
    for path in paths:
      shutil.copy2(path, os.path.join(target, folder))
  return target
