"""Preemption: SIGTERM (what schedulers send before a kill) and SIGINT become a request to
stop after the current step, so that the training loop saves a checkpoint of the step reached
and raises `Interrupted`; with several processes, JAX's distributed runtime delivers the
notice and every process agrees on the step."""

from __future__ import annotations

import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_signal(exitcode: int | None) -> int | None:
  """The stop signal (SIGTERM or SIGINT) that a finished process's exit code reports, else None:
  128 + its number from a process that caught it and stopped as it asks (as a shell reports a
  process the signal killed; `SignalStop.exit_code`), or minus its number, multiprocessing's
  code for a process the signal killed before it could catch it (while it started)."""
  for signum in STOP_SIGNALS:
    if exitcode in (128 + signum, -signum):
      return signum
  return None


class SignalStop(Exception):
  """Work stopped on SIGTERM / SIGINT with what it did kept; the same command resumes it."""

  def __init__(self, signum: int, message: str):
    self.signum = signum
    super().__init__(message)

  @property
  def exit_code(self) -> int:
    """What the stopped process exits with: 128 + the signal's number."""
    return 128 + self.signum


class Interrupted(SignalStop):
  """Training stopped on SIGTERM / SIGINT after saving a checkpoint of the step reached."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.step = step
    super().__init__(signum, f'Stopped by {signal.Signals(signum).name} after step {step}; its '
                     f'checkpoint is saved in {workdir}/checkpoints. Run the same command '
                     'again to resume.')


class StopSignals:
  """Turns SIGTERM (what schedulers send before a kill) and SIGINT into a request to stop
  after the current step; a second SIGINT interrupts at once. Only in the main thread (the
  only one that receives signals) of a single-process run: with several processes, JAX's
  distributed runtime receives the preemption notice and all processes agree on the step
  (`multihost_utils.reached_preemption_sync_point`)."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for signum in STOP_SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt  # asked twice: stop now
    self.signum = signum
    logging.warning('Received %s: finishing the current step, then saving a checkpoint.',
                    signal.Signals(signum).name)

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signum = signal.SIGTERM
      except RuntimeError:  # no preemption service in this distributed runtime
        pass
    return self.signum is not None

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False
