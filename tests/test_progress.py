"""The console of a watched run: log lines go above the progress bar, never through it."""

import io
import logging as std_logging

from absl import flags
from absl import logging
import pytest
import tqdm

from tce_jax import progress


@pytest.fixture
def absl_console():
  """absl's handler on the root logger, writing to its stream (as under `app.run`); undone
  after the test."""
  was_parsed = flags.FLAGS.is_parsed()
  flags.FLAGS.mark_as_parsed()
  root = std_logging.getLogger()
  installed = logging.get_absl_handler() not in root.handlers
  if installed:
    root.addHandler(logging.get_absl_handler())
  yield
  if installed:
    root.removeHandler(logging.get_absl_handler())
  if not was_parsed:
    flags.FLAGS.unparse_flags()


class Terminal(io.StringIO):
  """A stream that says it is a terminal (tqdm draws its bar on it)."""

  def isatty(self) -> bool:
    return True


def test_log_lines_are_written_above_the_bar_and_clu_notes_are_dropped(absl_console):
  handler = logging.get_absl_handler().python_handler
  terminal = Terminal()
  previous = handler.setStream(terminal)
  try:
    with tqdm.tqdm(total=10, desc='training', file=terminal, ncols=60, mininterval=0) as bar:
      with progress.above_bars():
        bar.update(3)
        drawn = terminal.getvalue()
        logging.warning('metrics line')
        logging.warning('Setting work unit notes: 3.0 steps/s, 30.0%% (3/10), ETA: 0m')
        bar.update(1)
      after = terminal.getvalue()
      assert handler.stream is terminal  # restored on exit
  finally:
    handler.setStream(previous)
  assert '3/10' in drawn
  written = after[len(drawn):]
  line = written.index('metrics line')
  # The bar's line is cleared before the log line and drawn again after it.
  assert '\r' in written[:line] and '3/10' in written[line:]
  assert 'Setting work unit notes' not in after


def test_disabled_leaves_the_handler_alone():
  handler = logging.get_absl_handler().python_handler
  stream = handler.stream
  with progress.above_bars(enabled=False):
    assert handler.stream is stream


def test_console_filter_drops_library_notices_and_keeps_other_warnings():
  from tce_jax import cli  # pylint: disable=g-import-not-at-top

  def record(level, message, path='/site-packages/orbax/checkpoint/_src/metadata/checkpoint.py'):
    return std_logging.LogRecord('absl', level, path, 1, message, None, None)

  quiet = cli.QuietLibraries()
  assert not quiet.filter(record(std_logging.WARNING, 'Using custom data configuration x',
                                 '/site-packages/tensorflow_datasets/core/dataset_builder.py'))
  assert not quiet.filter(record(std_logging.INFO, 'Saving checkpoint'))  # orbax INFO chatter
  assert quiet.filter(record(std_logging.WARNING, 'Checkpoint is corrupt'))
  assert quiet.filter(record(std_logging.INFO, 'Evaluation at step 4', '/tce_jax/evaluator.py'))


def test_metrics_line_shows_what_changes():
  summary = {'loss': 0.83571, 'mcce': 0.83571, 'pixel_accuracy': 70.9071,
             'grad_norm': 1.0642, 'learning_rate': 0.00464961,
             'nonfinite_steps': 0, 'skipped_records': 0}
  assert progress.metrics_line(350, summary, 'mcce') == (
      'step 350: loss 0.8357, pixel accuracy 70.9%, grad norm 1.06, learning rate 0.00465')
  line = progress.metrics_line(350, {**summary, 'mcce': 0.9, 'nonfinite_steps': 2,
                                     'skipped_records': 1}, 'focal')
  assert 'mcce 0.9,' in line and line.endswith('non-finite steps 2, skipped records 1')


def test_rate_leaves_out_pauses_and_gives_the_eta(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(progress.time, 'perf_counter', lambda: clock[0])
  rate = progress.Rate(0, 1000)
  clock[0] += 5.0  # the first step: compilation
  rate.restart(1)
  clock[0] += 10.0  # 99 steps in 10 s of training ...
  with rate.paused():
    clock[0] += 30.0  # ... and an evaluation of 30 s
  assert rate.report(100) == '9.90 steps/s, 10% (100/1000), ETA 2 min'
  clock[0] += 100.0
  assert rate.report(1000) == '9.00 steps/s, 100% (1000/1000), ETA 0 s'
  assert progress.duration(7500) == '2 h 05 min'
