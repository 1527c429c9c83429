"""The records a run writes (config.json, eval/<step>.json and .csv): atomic and strict.

A reader (report, TensorBoard, a user's script) never sees a half-written file: records are
written to a temporary file and renamed. Non-finite floats are written as null, so strict
JSON parsers accept every record.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any


def _strict(value: Any) -> Any:
  """`value` with NaN / infinite floats replaced by None (JSON null)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _strict(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_strict(v) for v in value]
  return value


def write_json(path: str, record: dict) -> None:
  """Writes `record` to `path` atomically, as strict JSON (NaN -> null)."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(_strict(record), f, indent=1, allow_nan=False)
  os.replace(tmp, path)


def write_csv(path: str, rows: list[dict]) -> None:
  """Writes `rows` (dicts with the same keys) to `path` atomically; None is an empty cell."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: '' if v is None else (f'{v:.4f}' if isinstance(v, float) else v)
                       for k, v in row.items()})
  os.replace(tmp, path)
