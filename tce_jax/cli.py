"""Command-line plumbing of the programs (`main`, `evaluate`, `report`): a mistyped flag or
config field is one line naming it, with the closest valid names, and exit code 2; `--help`
lists the configs that exist and exits 0.

Used as `app.run(main, flags_parser=cli.parse_flags)`; `quiet_libraries()` at the start of
`main` keeps the console to what concerns the run.
"""

from __future__ import annotations

import difflib
import logging as logging_lib
import importlib.util
import os
import re
import sys
from typing import Sequence

from absl import flags
from absl import logging
import ml_collections

USAGE_ERROR = 2  # the exit code of a command-line mistake (as argparse's)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
HELP_FLAGS = ('--help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def available_configs() -> list[str]:
  """The config files shipped with the package (`configs/<name>.py`)."""
  return sorted(name[:-3] for name in os.listdir(CONFIG_DIR)
                if name.endswith('.py') and not name.startswith('_'))


def configs_help() -> str:
  return ('Configs (--config=configs/<name>.py; any field can be set with '
          '--config.<section>.<field>=VALUE, see configs/default.py):\n  ' +
          '\n  '.join(available_configs()))


def field_names(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  """Every settable field of `config` as a dotted path ('tce.t', 'dataset.synthetic.height',
  ...; sections themselves are not listed)."""
  names = []
  for key, value in config.items():
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      names += field_names(value, f'{path}.')
    else:
      names.append(path)
  return names


def _load_config_file(argv: Sequence[str]) -> tuple[str, ml_collections.ConfigDict] | None:
  """(path, config) of the `--config=PATH` in argv, or None when it cannot be loaded."""
  for arg in argv:
    match = re.fullmatch(r'--config=([^:]+)(?::.*)?', arg)
    if match:
      path = match.group(1)
      try:
        spec = importlib.util.spec_from_file_location('_config_file', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return path, module.get_config()
      except Exception:  # pylint: disable=broad-except  (reported by the flag itself)
        return None
  return None


def unknown_field_message(argv: Sequence[str]) -> str | None:
  """'--config.tce.tt: configs/x.py has no field tce.tt (did you mean: tce.t, ...?)' for the
  first override in argv that names no field of the config file; None if all exist."""
  loaded = _load_config_file(argv)
  if loaded is None:
    return None
  path, config = loaded
  names = field_names(config)
  for arg in argv:
    match = re.fullmatch(r'--(?:no)?config\.([\w.]+)(?:=.*)?', arg)
    if match and match.group(1) not in names:
      field = match.group(1)
      close = difflib.get_close_matches(field, names, n=3, cutoff=0.6)
      hint = f' (did you mean: {", ".join(close)}?)' if close else ''
      return f'--config.{field}: {path} has no field {field}{hint}'
  return None


def fail(message: str) -> None:
  """Prints `Error: message` as one line on stderr and exits with USAGE_ERROR."""
  print(f'Error: {" ".join(message.split())}', file=sys.stderr)
  raise SystemExit(USAGE_ERROR)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one-line errors (exit code 2) and `--help` exiting 0."""
  try:
    return flags.FLAGS(argv)
  except SystemExit as e:
    if any(arg.split('=')[0] in HELP_FLAGS for arg in argv[1:]):  # absl printed the help
      if 'config' in flags.FLAGS:
        print('\n' + configs_help())
      raise SystemExit(0) from e
    raise
  except (AttributeError, KeyError) as e:  # ml_collections: an override of no field
    fail(unknown_field_message(argv) or f'unknown config field: {e}')
  except flags.Error as e:
    fail(f'{e} (--help lists the flags)')
  return []  # unreachable


class QuietLibraries(logging_lib.Filter):
  """Drops the INFO chatter of orbax, etils and tfds, and the library notices that say
  nothing about the run (no TPU library on a CPU or GPU machine, a tfds builder config or
  folder that this project generates itself, OpenCV's absence, orbax looking for an
  item-level metadata file that its own checkpoint layout does not write when `evaluate` or
  `report` restore only the model); keeps the other warnings."""

  NOTICES = ('Unable to initialize backend', 'Using custom data configuration',
             'has no dataset_info.json', 'OpenCV is not installed',
             'Metadata file does not exist')

  def filter(self, record: logging_lib.LogRecord) -> bool:
    noisy = any(f'/{lib}/' in record.pathname for lib in ('orbax', 'etils', 'tensorflow_datasets'))
    if noisy and record.levelno < logging_lib.WARNING:
      return False
    message = record.getMessage()
    return not any(notice in message for notice in self.NOTICES)


def quiet_libraries() -> None:
  """Filters the console (absl's handler) with `QuietLibraries`."""
  logging.get_absl_handler().addFilter(QuietLibraries())
