"""Progress of long loops for whoever watches: a tqdm bar (rate, ETA) on a terminal, log lines
in a log file or a job's output.

`watched()` says whether a human watches this process's console (the first process, stderr a
terminal). `above_bars()` routes absl's log lines above the bars while they show, so that a
training run's metrics lines and its bar never overwrite each other.
"""

from __future__ import annotations

import contextlib
import io
import logging as logging_lib
import sys
from typing import Iterator

from absl import logging
import jax
import tqdm


def watched() -> bool:
  """Whether a progress bar would be seen: process 0, with stderr on a terminal."""
  return jax.process_index() == 0 and sys.stderr.isatty()


class _AboveBars(io.TextIOBase):
  """A stream that clears the tqdm bars before each write and redraws them after it."""

  def __init__(self, stream):
    super().__init__()
    self._stream = stream

  def write(self, text: str) -> int:
    with tqdm.tqdm.external_write_mode(file=self._stream):
      self._stream.write(text)
    return len(text)

  def flush(self) -> None:
    self._stream.flush()

  def isatty(self) -> bool:
    return self._stream.isatty()

  # Equal to the stream it wraps: absl writes a record twice when its handler's stream is not
  # sys.stderr (and the record's level reaches --stderrthreshold).
  def __eq__(self, other) -> bool:
    return other is self or other is self._stream

  def __hash__(self) -> int:
    return hash(self._stream)


class _DropNotes(logging_lib.Filter):
  """Drops clu's progress notes ('Setting work unit notes: N steps/s, ... ETA'): the bar
  says the same."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return not record.getMessage().startswith('Setting work unit notes')


@contextlib.contextmanager
def above_bars(enabled: bool = True) -> Iterator[None]:
  """While active (and `enabled`), absl's console lines are written above the progress bars
  and clu's progress notes are dropped from the console."""
  if not enabled:
    yield
    return
  handler = logging.get_absl_handler().python_handler
  notes = _DropNotes()
  previous = handler.setStream(_AboveBars(handler.stream))
  handler.addFilter(notes)
  try:
    yield
  finally:
    handler.removeFilter(notes)
    handler.setStream(previous)
