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
import threading
from typing import Any, Sequence

from absl import flags
from absl import logging
import ml_collections

USAGE_ERROR = 2  # the exit code of a command-line mistake (as argparse's)
RUN_ERROR = 1  # the exit code of an error met while running (bad data, a refused workdir)
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


def _config_path(argv: Sequence[str]) -> str | None:
  """The PATH of `--config=PATH` (or `--config PATH`) in argv, without a `:` suffix."""
  for i, arg in enumerate(argv):
    match = re.fullmatch(r'--config=([^:]+)(?::.*)?', arg)
    if match:
      return match.group(1)
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].split(':')[0]
  return None


def _closest_config(path: str) -> str:
  """' (did you mean configs/x.py?)' for the shipped config whose name is closest."""
  name = os.path.splitext(os.path.basename(path))[0]
  close = difflib.get_close_matches(name, available_configs(), n=1, cutoff=0.5)
  return f' (did you mean configs/{close[0]}.py?)' if close else ' (--help lists the configs)'


def load_config_file(path: str) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, module) of a config file; ValueError in one line naming the file when it is
  missing, does not run (a syntax error, an exception), has no `get_config`, or sets a field
  that `configs/default.py` lacks and its `NEW_FIELDS` does not declare (a typo in a config
  file is as costly as one on the command line)."""
  if not os.path.isfile(path):
    raise ValueError(f'--config={path}: no such file{_closest_config(path)}')
  try:
    spec = importlib.util.spec_from_file_location('_config_file', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ValueError(f'--config={path}: syntax error at line {e.lineno}: {e.msg}') from e
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'--config={path} fails when loaded: {type(e).__name__}: {e}') from e
  if not callable(getattr(module, 'get_config', None)):
    raise ValueError(f'--config={path} defines no get_config() (a config file returns its '
                     'ConfigDict from get_config(); see configs/default.py)')
  try:
    config = module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    line = _line_in(e, path)
    raise ValueError(f'--config={path}: get_config() raised {type(e).__name__}: {e}{line}') from e
  from tce_jax.configs import default  # pylint: disable=g-import-not-at-top
  known = set(field_names(default.get_config())) | set(getattr(module, 'NEW_FIELDS', ()))
  for name in field_names(config):
    if name not in known and not any(name.startswith(f'{k}.') for k in known):
      close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
      hint = f' (did you mean: {", ".join(close)}?)' if close else ''
      raise ValueError(
          f'--config={path} sets config.{name}, which configs/default.py does not have{hint}; '
          "to add a field on purpose, list it in the file's NEW_FIELDS = ('" + name + "',)")
  return config, module


def _line_in(error: Exception, path: str) -> str:
  """' (line N)' of the innermost frame of `error` in the file `path`."""
  line, tb = '', error.__traceback__
  while tb is not None:
    if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
      line = f' (line {tb.tb_lineno})'
    tb = tb.tb_next
  return line


def _load_config_file(argv: Sequence[str]) -> tuple[str, ml_collections.ConfigDict] | None:
  """(path, config) of the `--config=PATH` in argv, or None when it cannot be loaded."""
  path = _config_path(argv)
  if path is None:
    return None
  try:
    return path, load_config_file(path)[0]
  except ValueError:
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


def exit_on(error: Exception) -> None:
  """Ends a program on an error the user can act on: `Error: ...` once on stderr (no
  traceback, no log line repeating it) and exit code 1."""
  print(f'Error: {error}', file=sys.stderr)
  raise SystemExit(RUN_ERROR) from error


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with one-line errors (exit code 2) and `--help` exiting 0. The
  config file is checked first (`load_config_file`), so that its problems are one line too."""
  path = _config_path(argv[1:])
  if path is not None and 'config' in flags.FLAGS and not any(
      arg.split('=')[0] in HELP_FLAGS for arg in argv[1:]):
    try:
      load_config_file(path)
    except ValueError as e:
      fail(str(e))
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
  folder that this project generates itself, OpenCV's absence); keeps the other warnings."""

  NOTICES = ('Unable to initialize backend', 'Using custom data configuration',
             'has no dataset_info.json', 'OpenCV is not installed')

  def filter(self, record: logging_lib.LogRecord) -> bool:
    noisy = any(f'/{lib}/' in record.pathname for lib in ('orbax', 'etils', 'tensorflow_datasets'))
    if noisy and record.levelno < logging_lib.WARNING:
      return False
    if '/orbax/' in record.pathname and record.levelno >= logging_lib.ERROR:
      return False  # a failed save or restore: `checkpoints` reports it in one line
    message = record.getMessage()
    return not any(notice in message for notice in self.NOTICES)


def _from_orbax(tb) -> bool:
  while tb is not None:
    if '/orbax/' in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


def quiet_libraries() -> None:
  """Filters the console (absl's handler) with `QuietLibraries`, and keeps the tracebacks of
  orbax's background threads (a failed save on a full disk, their event loops closing at
  exit) off it: the error they end in is reported once, in one line, by `checkpoints`."""
  logging.get_absl_handler().addFilter(QuietLibraries())
  default_hook = threading.excepthook

  def hook(args):
    if _from_orbax(args.exc_traceback):
      logging.debug('orbax thread %s: %s', getattr(args.thread, 'name', '?'), args.exc_value)
    else:
      default_hook(args)

  threading.excepthook = hook
