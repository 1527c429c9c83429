"""The records a run writes (config.json, eval/<step>.json and .csv): atomic and strict.

A reader (report, TensorBoard, a user's script) never sees a half-written file: records are
written to a temporary file and renamed. Non-finite floats are written as null, so strict
JSON parsers accept every record.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from typing import Any, Iterator, TextIO


def _strict(value: Any) -> Any:
  """`value` with NaN / infinite floats replaced by None (JSON null)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _strict(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_strict(v) for v in value]
  return value


@contextlib.contextmanager
def _atomic(path: str, newline: str | None = None) -> Iterator[TextIO]:
  """A file written as `path`.tmp and renamed to `path`; on failure (a full disk) the
  temporary file is removed and OSError names `path`."""
  tmp = f'{path}.tmp'
  try:
    with open(tmp, 'w', newline=newline) as f:
      yield f
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    reason = e.strerror or str(e)
    raise OSError(e.errno, f'Writing {path} failed: {reason}') from None


def write_json(path: str, record: dict) -> None:
  """Writes `record` to `path` atomically, as strict JSON (NaN -> null)."""
  with _atomic(path) as f:
    json.dump(_strict(record), f, indent=1, allow_nan=False)


def read_json(path: str) -> Any:
  """The JSON in `path`; ValueError naming the file when it is not valid JSON."""
  with open(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ValueError(f'{path} is not valid JSON ({e}): damaged or half-copied?') from None


def write_csv(path: str, rows: list[dict]) -> None:
  """Writes `rows` (dicts with the same keys) to `path` atomically; None is an empty cell."""
  with _atomic(path, newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: '' if v is None else (f'{v:.4f}' if isinstance(v, float) else v)
                       for k, v in row.items()})
