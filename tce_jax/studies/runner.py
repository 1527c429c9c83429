"""Runs a study (`tce_jax.studies.spec.Study`): plans its runs seed by seed, trains what is not
finished (resuming interrupted runs from their checkpoints), copies each finished run's records
to a records folder (which counts as finished on any machine), stores the predictions its
qualitative figure needs, and rebuilds its report and summary from the runs or records alone.

Each run lives in OUT/<method>_s<seed>; with `records`, its config.json, eval/*.json,
environment/ and stored predictions are copied to RECORDS/<method>_s<seed>/ when it finishes,
and a run found there is the study's run (its recorded config must train what this version
would). The report (the study's reference first) goes to `report_dir` with summary.md: the
families' tables, the ablation contrasts and the reference's profile.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from multiprocessing import connection
import os
import signal
import sys
import threading

from absl import logging as absl_logging
import jax
import tqdm

from tce_jax import evaluate
from tce_jax import preemption
from tce_jax import records as records_lib
from tce_jax import report
from tce_jax import rundir
from tce_jax import train
from tce_jax import workdir as workdir_lib
from tce_jax.analysis import profile as profile_lib
from tce_jax.analysis import summary as summary_lib
from tce_jax.configs import tiny
from tce_jax.data import datasets
from tce_jax.studies.spec import Study


def study_runs(study: Study, methods: list[str], seeds: int,
               sweep_seeds: int) -> list[tuple[str, int]]:
  """(method, seed) in training order: seed by seed, so a study stopped at any point holds
  the same number of seeds of every method; a sweep method gets min(seeds, sweep_seeds)."""
  count = {m: min(seeds, sweep_seeds) if study.methods[m].sweep else seeds for m in methods}
  return [(m, s) for s in range(seeds) for m in methods if s < count[m]]


def run_config(study: Study, method: str, seed: int, *, steps: int, quick: bool,
               data_dir: str | None):
  """The config of one run: the method's config file and overrides, the study's seed, steps
  and data_dir (the tiny profile with `quick`)."""
  config = study.methods[method].make_config()
  config.name = method
  config.seed = seed
  config.dataset.data_dir = data_dir
  config.train.num_steps = steps
  config.train.eval_every = steps
  config.train.checkpoint_every = max(steps // 5, 1)
  config.train.log_every = max(min(50, steps // 2), 1)
  if quick:
    tiny.apply(config)
    if study.quick is not None:
      study.quick(config)
  return config


def use_compilation_cache(directory: str) -> None:
  """A persistent XLA compilation cache for the runs (unless JAX_COMPILATION_CACHE_DIR is
  set): the seeds of a method compile the same programs (the seed is data, not code), and
  every method shares the evaluation program, so only the first run of each compiles. A hit
  is the very executable a compile would give (the key covers program, flags and versions)."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def finished(workdir: str, steps: int) -> bool:
  return os.path.exists(rundir.eval_path(workdir, steps))


def record_run(workdir: str, records: str) -> str:
  """Copies the run's small records (`rundir.copy_records`: config.json, eval/*.json,
  environment/*.json, stored predictions) to RECORDS/<run name>/; returns that path."""
  return rundir.copy_records(workdir, os.path.join(records, os.path.basename(
      os.path.normpath(workdir))))


def study_classes(study: Study, field: str, config, quick: bool = False) -> list[str]:
  """The classes the study names in `field` (qualitative_classes, fixed_classes), checked
  against the dataset's; in the smoke version those of them its dataset has, or its first
  class. None named: none."""
  wanted = getattr(study, field)
  if not wanted:
    return []
  names = list(datasets.get_spec(config).class_names)
  classes = [c for c in wanted if c in names or not quick] or names[:1]
  unknown = [c for c in classes if c not in names]
  if unknown:
    raise ValueError(f'The {field} {unknown} of study {study.name} are not classes of '
                     f'{config.dataset.name}: {", ".join(names)}')
  return classes


def qualitative_images(study: Study, config, quick: bool = False) -> list[int]:
  """The eval-split images of the qualitative figure: where the study's qualitative classes
  appear most (`study_classes`)."""
  names = list(datasets.get_spec(config).class_names)
  classes = study_classes(study, 'qualitative_classes', config, quick) or names[:1]
  source = datasets.load_source(config, config.dataset.eval_split)
  return report.qualitative_indices(source, [names.index(c) for c in classes],
                                    study.qualitative_images)


def store_predictions(workdir: str, indices: list[int]) -> None:
  """Predicts the validation images `indices` with the run's latest checkpoint and stores the
  label maps in WORKDIR/qualitative/ (report.write_predictions)."""
  config = workdir_lib.load_run_config(workdir)
  source = datasets.load_source(config, config.dataset.eval_split)
  predictions = evaluate.predict_labels(config, workdir, [source[i]['image'] for i in indices])
  report.write_predictions(workdir, indices, predictions, datasets.get_spec(config).palette)


def compare_with_record(workdir: str, record: str, steps: int) -> bool:
  """Whether a run trained again reproduced its record's evaluation exactly; prints which."""
  again = records_lib.read_json(rundir.eval_path(workdir, steps))
  recorded = records_lib.read_json(rundir.eval_path(record, steps))
  same = again == recorded
  print(f'{os.path.basename(os.path.normpath(record))} trained again: its evaluation '
        + ('equals the record exactly' if same else
           f'differs from the record (mIoU {again["miou"]:.4f} vs {recorded["miou"]:.4f}); the '
           'record stays the study\'s number'))
  return same


def check_record(record: str, config) -> None:
  """Raises ValueError when the recorded run trained something other than `config` would
  (a field outside workdir.HARMLESS_PREFIXES differs): a stale record is never reused."""
  changes = workdir_lib.harmful(workdir_lib.config_changes(
      workdir_lib.load_run_config(record), config))
  if changes:
    listed = '; '.join(f'{k}: recorded {a!r}, now {b!r}' for k, (a, b) in changes.items())
    raise ValueError(f'The record {record} was made with another config ({listed}). Move it '
                     'away to train the run again, or run the version that made it.')



@dataclasses.dataclass
class _Plan:
  """A study's runs as this invocation sees them."""
  study: Study
  methods: list[str]
  steps: int
  quick: bool
  data_dir: str | None
  qualitative_seed: int
  indices: list[int] = dataclasses.field(default_factory=list)  # found when first needed

  def config(self, method: str, seed: int):
    return run_config(self.study, method, seed, steps=self.steps, quick=self.quick,
                      data_dir=self.data_dir)

  def figure_images(self) -> list[int]:
    if not self.indices:
      self.indices.extend(qualitative_images(self.study, self.config(self.methods[0], 0),
                                             self.quick))
    return self.indices

  def has_predictions(self, run: str) -> bool:
    return (os.path.isdir(rundir.qualitative_dir(run)) and
            report.read_predictions(run, self.figure_images()) is not None)

  def showable(self, run: str) -> bool:
    return os.path.isdir(rundir.checkpoints_dir(run)) or self.has_predictions(run)


def run_study(study: Study, out: str, *, seeds: int, steps: int | None = None,
              quick: bool = False, data_dir: str | None = None,
              methods: list[str] | None = None, records: str | None = None,
              sweep_seeds: int = 3, train_missing: bool = True,
              report_dir: str | None = None, jobs: int = 1) -> dict:
  """Trains what is not finished yet (in OUT or in RECORDS; with `train_missing` False, leaves
  it out), then writes the report into `report_dir` (default OUT/report); returns the report.
  `methods` defaults to all of the study's (without the sweep with `quick`). With `jobs` > 1,
  that many runs train at once, each in its own process pinned to its share of the cores
  (`train_side_by_side`)."""
  if methods is None:
    methods = study.main_methods if quick else list(study.methods)
  unknown = [m for m in methods if m not in study.methods]
  if unknown:
    raise ValueError(f'Unknown methods {unknown}; known: {", ".join(study.methods)}')
  if steps is None:
    steps = study.methods[study.reference].make_config().train.num_steps
  plan = _Plan(study, methods, steps, quick, data_dir, min(study.qualitative_seed, seeds - 1))
  use_compilation_cache(os.path.join(out, 'xla_cache'))
  done, sources, missing = [], [], []  # finished runs, where their records are, unfinished
  runs = study_runs(study, methods, seeds, sweep_seeds)
  if jobs > 1 and train_missing:
    train_side_by_side(plan, runs, out, records, jobs)
  with tqdm.tqdm(total=len(runs) * steps, desc=study.name, unit='step') as progress:
    for method, seed in runs:
      source = _run_one(plan, method, seed, out, records, train_missing)
      if source:
        done.append((method, seed))
        sources.append(source)
      else:
        missing.append(f'{method}_s{seed}')
      progress.update(steps)
  if missing:
    listed = missing if len(missing) <= 6 else missing[:5] + ['...', missing[-1]]
    print(f'Not finished, left out of the report: {len(missing)} runs ({", ".join(listed)})')
  if not done or done[0][0] != methods[0]:
    raise ValueError(f'No finished run of the reference method {methods[0]}: nothing to report')
  return write_report(plan, done, sources, report_dir or os.path.join(out, 'report'))


def _run_one(plan: _Plan, method: str, seed: int, out: str, records: str | None,
             train_missing: bool) -> str | None:
  """Finishes one run if it can; returns the folder its records are read from (None: not
  finished and not trained here)."""
  study, steps = plan.study, plan.steps
  config = plan.config(method, seed)
  workdir, record = _folders(method, seed, out, records)
  recorded = bool(record) and finished(record, steps)
  if recorded:
    check_record(record, config)
  shown = method in study.qualitative_methods and seed == plan.qualitative_seed
  # A recorded run of the qualitative figure without its predictions trains again.
  retrain = train_missing and shown and recorded and not plan.has_predictions(record)
  if recorded and not retrain:  # the record is the study's run; never overwritten (a
    return record                # finished copy in OUT may come from another machine)
  if not (finished(workdir, steps) or train_missing):
    return None
  if not finished(workdir, steps):
    train.train_and_evaluate(config, workdir)
  if shown and not plan.has_predictions(workdir):
    store_predictions(workdir, plan.figure_images())
  if retrain:  # the record keeps its evaluation; it gains the predictions
    compare_with_record(workdir, record, steps)
    rundir.copy_records(workdir, record, folders=(rundir.QUALITATIVE,))
  elif records:
    record_run(workdir, records)
  return record if recorded else workdir


def _folders(method: str, seed: int, out: str, records: str | None) -> tuple[str, str | None]:
  """A run's workdir OUT/<method>_s<seed>, and its record folder (None without records)."""
  name = f'{method}_s{seed}'
  return os.path.join(out, name), records and os.path.join(records, name)


def _to_train(plan: _Plan, method: str, seed: int, out: str, records: str | None) -> bool:
  """Whether the run is neither recorded nor finished in OUT."""
  workdir, record = _folders(method, seed, out, records)
  if record and finished(record, plan.steps):
    return False
  return not finished(workdir, plan.steps)


class Stopped(preemption.SignalStop):
  """The side-by-side runner stopped on a signal: its running runs stopped, each saving a
  checkpoint of the step reached (or, killed by the signal before it could save one, keeping
  its earlier ones), and resume when the same command runs again."""

  def __init__(self, signum: int, runs: list[str], not_started: int):
    saved = (f'{", ".join(runs)} stopped, each resuming from its latest checkpoint' if runs
             else 'no run was training')
    super().__init__(signum, f'Stopped by {signal.Signals(signum).name}: {saved} (runs not '
                     f'started: {not_started}). Run the same command again to resume.')


def _train_pinned(config, workdir: str, cores: set[int], cache: str, log: str) -> None:
  """A side-by-side run's process: pinned to `cores` before JAX starts (so XLA sizes its
  thread pool to them), its console output to `log`. Stopped by a signal, it saves a
  checkpoint and exits as `python -m tce_jax.main` does (`SignalStop.exit_code`). A Ctrl-C
  (which the terminal sends to the runner's whole process group) that comes before its
  training loop catches signals, or a second one in it, ends it as killed by SIGINT, without
  a traceback: the runner counts it as stopped, resuming from its earlier checkpoints."""
  os.sched_setaffinity(0, cores)
  with open(log, 'a') as f:
    os.dup2(f.fileno(), sys.stdout.fileno())
    os.dup2(f.fileno(), sys.stderr.fileno())
  absl_logging.set_verbosity(absl_logging.INFO)  # as `python -m tce_jax.main` logs
  use_compilation_cache(cache)
  try:
    train.train_and_evaluate(config, workdir)
  except train.Interrupted as e:
    absl_logging.warning('%s', e)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:  # multiprocessing would make it exit 1, "failed", with a traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)


def train_side_by_side(plan: _Plan, runs: list[tuple[str, int]], out: str,
                       records: str | None, jobs: int) -> None:
  """Trains the unfinished `runs` `jobs` at a time, in study order, each in a fresh process
  pinned to one of `jobs` equal shares of this process's cores, its console output in
  OUT/<run>.log; as each finishes, its records and predictions are made here (`_run_one`).
  On 2 cores, two CamVid runs side by side train 7% more steps per second than one after the
  other (docs/performance.md). A failed run stops new starts; the running ones finish, then
  RuntimeError names the failed run and its log. SIGTERM or SIGINT to this process (or a
  run's own stop on a signal) stops new starts and passes SIGTERM on to the running runs,
  which save a checkpoint of the step reached; then `Stopped` says which runs resume."""
  cores = sorted(os.sched_getaffinity(0))
  if jobs > len(cores):
    raise ValueError(f'jobs={jobs} needs as many cores; this process may use {len(cores)}')
  shares = [set(cores[i::jobs]) for i in range(jobs)]
  waiting = [(m, s) for m, s in runs if _to_train(plan, m, s, out, records)]
  context = multiprocessing.get_context('spawn')
  running: dict[int, tuple[multiprocessing.Process, str, int, int]] = {}  # sentinel -> run
  failed, stopped = [], []
  signals = []  # the signal that stops the study: this process's, or a run's own

  def pass_on(signum, frame):
    del frame
    if not signals:  # os.write: a print here could re-enter one the signal interrupted
      os.write(sys.stderr.fileno(), f'Received {signal.Signals(signum).name}: the running '
               'runs save a checkpoint and stop; no new run starts.\n'.encode())
    signals.append(signum)
    for process, *_ in running.values():
      process.terminate()  # SIGTERM: the run stops after its step, with a checkpoint

  previous = {}
  if threading.current_thread() is threading.main_thread():
    previous = {s: signal.signal(s, pass_on) for s in preemption.STOP_SIGNALS}
  try:
    while waiting or running:
      while waiting and len(running) < jobs and not (failed or signals):
        method, seed = waiting.pop(0)
        if not _to_train(plan, method, seed, out, records):  # finished meanwhile, elsewhere
          continue
        share = next(i for i in range(jobs) if i not in {r[3] for r in running.values()})
        workdir, _ = _folders(method, seed, out, records)
        name, log = os.path.basename(workdir), workdir + '.log'
        os.makedirs(out, exist_ok=True)
        process = context.Process(target=_train_pinned, name=name, args=(
            plan.config(method, seed), workdir, shares[share], os.path.join(out, 'xla_cache'),
            log))
        process.start()
        print(f'{name}: training on cores {sorted(shares[share])}, console output in {log}')
        running[process.sentinel] = (process, method, seed, share)
        if signals:  # the signal came while it started
          process.terminate()
      if not running:
        break
      for sentinel in connection.wait(list(running)):
        process, method, seed, _ = running.pop(sentinel)
        process.join()
        if process.exitcode == 0:
          _run_one(plan, method, seed, out, records, train_missing=False)
          print(f'{process.name}: finished')
        elif signum := preemption.stop_signal(process.exitcode):
          stopped.append(process.name)
          if not signals:  # the run itself was stopped: start no other
            signals.append(signum)
          how = ('its checkpoint saved' if process.exitcode > 0 else
                 'killed by the signal, its earlier checkpoints kept')
          print(f'{process.name}: stopped, {how}; it resumes on the next start')
        else:
          failed.append(f'{process.name} (exit {process.exitcode}; {out}/{process.name}.log)')
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if failed:
    also = f'; stopped, resuming on the next start: {", ".join(stopped)}' if stopped else ''
    raise RuntimeError(f'Failed: {", ".join(failed)}{also}. Runs not started: '
                       f'{len(waiting)}; the finished ones are kept.')
  if signals:
    raise Stopped(signals[0], stopped, len(waiting))


def write_report(plan: _Plan, done: list[tuple[str, int]], sources: list[str],
                 report_dir: str) -> dict:
  """The report of the finished runs `done` (read from `sources`), the sweep figure and
  summary.md (families, ablations, the reference's profile)."""
  study, methods, seed = plan.study, plan.methods, plan.qualitative_seed
  # The qualitative figure: the seed-`seed` run of each of its methods that has stored
  # predictions (or checkpoints to predict with).
  figure_runs = {m: s for (m, sd), s in zip(done, sources)
                 if m in study.qualitative_methods and sd == seed}
  shown_runs = {m: s for m, s in figure_runs.items() if plan.showable(s)}
  absent = [m for m in study.qualitative_methods if m in methods and m not in shown_runs]
  if methods[0] not in shown_runs:
    print(f'No qualitative figure: the reference has no finished seed-{seed} run with stored '
          'predictions or checkpoints.')
  elif absent:
    print(f'Left out of the qualitative figure (no finished seed-{seed} run with stored '
          f'predictions or checkpoints): {", ".join(absent)}')
  # Labelled by method, not by the recorded config.name (a harmless field a record may hold
  # another value of, e.g. a calibration run reused as a study run).
  first = {}
  for (method, _), source in zip(done, sources):
    first.setdefault(method, source)
  shown = methods[0] in shown_runs
  result = report.make_report(
      sources, report_dir, reference=sources[0], labels=[m for m, _ in done],
      qualitative_images=study.qualitative_images if shown else 0,
      kinds={m: study.kind(m) for m in first}, qualitative_labels=list(shown_runs),
      qualitative_indices=plan.figure_images() if shown else None,
      qualitative_runs=list(shown_runs.values()),
      qualitative_dataset=plan.config(methods[0], 0).dataset,
      qualitative_title=study.qualitative_title.format(
          classes=', '.join(study.qualitative_classes), seed=seed),
      # The confusion figure's differences: the methods the study shows in pictures.
      figure_options={'confusion': {'labels': [m for m in first
                                               if m in study.qualitative_methods]}},
      fixed_classes=study_classes(study, 'fixed_classes', plan.config(methods[0], 0),
                                  plan.quick))
  families = {'Methods': [m for m in first if not study.methods[m].sweep],
              't sweep': [m for m in first if study.methods[m].sweep]}
  reference_runs = [w for (m, _), w in zip(done, sources) if m == methods[0]]
  profile = profile_lib.profile_table(
      *profile_lib.benchmark_profile(reference_runs, plan.steps), label=methods[0],
      targets=study.profile_targets, paper_miou=study.paper_miou)
  if study.sweep_series:
    report.plot_sweep(result, report_dir, study.sweep_series)
  margins = dict(study.equivalence_margins)
  contrasts = summary_lib.ablations(result, study.ablations, margins)
  sensitivity = summary_lib.fixed_classes_section(
      result, {**{title: [(m, methods[0]) for m in members]
                  for title, members in families.items() if members},
               **{title: [(v, b) for _, b, v in rows]
                  for title, rows in study.ablations.items()}},
      margins.get('sorted_bottom'),
      'Sensitivity: the bottom statistic on classes named in advance')
  with open(os.path.join(report_dir, 'summary.md'), 'w') as f:
    f.write(summary_lib.summary(result, {k: v for k, v in families.items() if v},
                                margins) + '\n\n' +
            (contrasts + '\n\n' if contrasts else '') +
            (sensitivity + '\n\n' if sensitivity else '') + profile + '\n')
  print(profile)
  return result
