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
import shutil
import sys
import time
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
  """While active, clu's progress notes are dropped from the console (the training loop's
  own lines say the same, right), and with `enabled` absl's console lines are written above
  the progress bars."""
  handler = logging.get_absl_handler().python_handler
  notes = _DropNotes()
  handler.addFilter(notes)
  previous = handler.setStream(_AboveBars(handler.stream)) if enabled else None
  try:
    yield
  finally:
    handler.removeFilter(notes)
    if enabled:
      handler.setStream(previous)


def bar_width() -> dict:
  """tqdm's width arguments: follow the terminal, or 100 columns where it reports none (a
  terminal of 0 columns would hide the bar)."""
  columns = shutil.get_terminal_size((0, 0)).columns
  return {'dynamic_ncols': True} if columns > 0 else {'ncols': 100}


def duration(seconds: float) -> str:
  """'45 s', '12 min', '2 h 05 min'."""
  if seconds < 60:
    return f'{seconds:.0f} s'
  minutes = round(seconds / 60)
  return f'{minutes} min' if minutes < 60 else f'{minutes // 60} h {minutes % 60:02d} min'


class Rate:
  """Training steps per second since the last report, the time spent in evaluations and
  checkpoints (inside `paused()`) left out, and the ETA at that rate: the log-file progress."""

  def __init__(self, start_step: int, num_steps: int):
    self.num_steps = num_steps
    self.restart(start_step)

  def restart(self, step: int) -> None:
    """Counts from `step`, now (e.g. after the first step, whose time is compilation)."""
    self.step, self.time, self.paused_s = step, time.perf_counter(), 0.0

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    start = time.perf_counter()
    try:
      yield
    finally:
      self.paused_s += time.perf_counter() - start

  def report(self, done: int) -> str:
    now = time.perf_counter()
    rate = (done - self.step) / max(now - self.time - self.paused_s, 1e-9)
    self.step, self.time, self.paused_s = done, now, 0.0
    eta = duration((self.num_steps - done) / max(rate, 1e-9))
    return (f'{rate:.2f} steps/s, {100 * done / self.num_steps:.0f}% ({done}/'
            f'{self.num_steps}), ETA {eta}')


def metrics_line(step: int, summary: dict[str, float], loss_name: str) -> str:
  """The console line of the training metrics: what changes, not every field (all of them
  go to TensorBoard): the MCCE only where the loss is another, counters only when not 0."""
  parts = [f"loss {summary['loss']:.4g}"]
  if loss_name != 'mcce':
    parts.append(f"mcce {summary['mcce']:.4g}")
  parts += [f"pixel accuracy {summary['pixel_accuracy']:.1f}%",
            f"grad norm {summary['grad_norm']:.3g}",
            f"learning rate {summary['learning_rate']:.3g}"]
  for key, name in (('nonfinite_steps', 'non-finite steps'),
                    ('skipped_records', 'skipped records')):
    if summary.get(key):
      parts.append(f'{name} {summary[key]}')
  return f'step {step}: ' + ', '.join(parts)
