"""Studies (tce_jax.studies) and their command line, scripts/experiment.py: the smoke version
trains every method, writes the report, and a second start skips the finished runs; the
summary's statistics; the synthetic study's methods and ablations."""

import dataclasses
import functools
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tce_jax import preemption
from tce_jax import stats as stats_lib
from tce_jax import studies
from tce_jax import workdir as workdir_lib
from tce_jax.analysis import profile as profile_lib
from tce_jax.analysis import summary as summary_lib
from tce_jax.studies import runner
from tce_jax.studies.spec import config_fields
from tce_jax.studies.synthetic import CLASS_CROP

from conftest import ROOT, subprocess_env

STUDY = studies.load('synthetic')


@pytest.mark.slow
def test_quick_experiment_runs_every_method_and_resumes(tmp_path):
  base = [sys.executable, 'scripts/experiment.py', '--quick', f'--data_dir={tmp_path / "tfds"}',
          f'--records={tmp_path / "records"}']
  command = base + [f'--out={tmp_path / "exp"}']
  # ~7 min on an idle 2-core machine; the limit leaves room for a machine shared with training.
  first = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                         text=True, timeout=1800, check=False)
  assert first.returncode == 0, first.stderr[-3000:]
  with open(tmp_path / 'exp' / 'report' / 'report.json') as f:
    report = json.load(f)
  assert report['reference'] == 'mcce'
  assert list(report['labels']) == STUDY.main_methods
  assert list(report['labels'])[:7] == ['mcce', 'focal', 'uniform', 'tce_t0.1', 'tce_t1',
                                        'tce_image_t1', 'tce_class_t1']
  assert {'rcs', 'focal_no_alpha', 'ce_sqrt_inv_freq', 'ohem', 'recall',
          'tce_signal_class_t1', 'tce_size_prior_t1', 'uniform_crop'} <= set(report['labels'])
  assert os.path.exists(tmp_path / 'exp' / 'report' / 'report.md')
  with open(tmp_path / 'exp' / 'report' / 'summary.md') as f:
    text, profile = f.read().split('### Benchmark profile of mcce (1 seeds)')
  sections = {s.split('\n', 1)[0]: s for s in text.split('### ')[1:]}
  # One family of methods (no sweep with --quick), every ablation pair of METHODS and the
  # direct contrasts whose methods ran (not t = 10), none of the sweep's. Each family: its
  # statistics table (header, rule, a row per comparison; the methods' also the reference),
  # the adjusted p-values and the equivalence tests (header, rule, a row per comparison).
  assert list(sections) == ['Methods', 'Ablations', 'Direct contrasts (added after the runs)']
  rows = {title: sum(line.startswith('|') for line in body.splitlines())
          for title, body in sections.items()}
  compared = len(STUDY.main_methods) - 1
  assert rows['Methods'] == 3 * (2 + compared) + 1
  assert rows['Ablations'] == 3 * (2 + len(STUDY.ablations['Ablations']))
  assert rows['Direct contrasts (added after the runs)'] == 3 * (2 + 2)
  assert (tmp_path / 'exp' / 'report' / 'pareto.png').stat().st_size > 0
  assert (tmp_path / 'exp' / 'report' / 'sweep.png').stat().st_size > 0  # t = 0, 0.1, 1
  assert '| mean of the 5 worst classes |' in profile and '| sky |' in profile
  assert 'Benchmark profile of mcce' in first.stdout
  marker = tmp_path / 'exp' / 'tce_t1_s0' / 'eval' / '4.json'
  before = marker.stat().st_mtime_ns
  # A finished run in OUT that differs from its record (as one re-trained on another machine
  # does) never overwrites the record: the record is the study's run.
  elsewhere = tmp_path / 'exp' / 'focal_s0' / 'eval' / '4.json'
  original = elsewhere.read_bytes()
  rerun = json.loads(original)
  rerun['miou'] += 1.0
  elsewhere.write_text(json.dumps(rerun))
  second = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=900, check=False)
  assert second.returncode == 0, second.stderr[-3000:]
  assert (tmp_path / 'records' / 'focal_s0' / 'eval' / '4.json').read_bytes() == original
  elsewhere.write_bytes(original)
  assert marker.stat().st_mtime_ns == before, 'a finished run was trained again'
  assert 'Training ' not in second.stderr and 'trained again' not in second.stdout
  # Every run is recorded (config, evaluation and the code and machine it trained on, no
  # checkpoints; the qualitative figure's runs with their predictions) and a fresh output
  # folder rebuilds the report, the qualitative figure included, from the records alone.
  assert 'qualitative figure' not in first.stdout  # every column shown
  predicted = set()  # the stored images of each run of the figure: the same ones
  for method in STUDY.main_methods:
    recorded = tmp_path / 'records' / f'{method}_s0'
    figure = ['qualitative'] if method in STUDY.qualitative_methods else []
    assert sorted(os.listdir(recorded)) == ['config.json', 'environment', 'eval'] + figure, method
    assert os.listdir(recorded / 'environment') == ['0.json'], method
    if figure:
      predicted.add(tuple(sorted(os.listdir(recorded / 'qualitative'))))
    assert (recorded / 'eval' / '4.json').read_bytes() == (
        tmp_path / 'exp' / f'{method}_s0' / 'eval' / '4.json').read_bytes()
  assert len(predicted) == 1 and 1 <= len(predicted.pop()) <= STUDY.qualitative_images
  rebuilt = subprocess.run(base + [f'--out={tmp_path / "rebuilt"}'], cwd=ROOT,
                           env=subprocess_env(), capture_output=True, text=True, timeout=900,
                           check=False)
  assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
  assert 'Training ' not in rebuilt.stderr
  assert not os.path.exists(tmp_path / 'rebuilt' / 'mcce_s0')
  with open(tmp_path / 'rebuilt' / 'report' / 'report.json') as f:
    labels = json.load(f)['labels']
  assert {k: (v['fairness'], v['per_class_iou']) for k, v in labels.items()} == {
      k: (v['fairness'], v['per_class_iou']) for k, v in report['labels'].items()}
  assert ((tmp_path / 'rebuilt' / 'report' / 'qualitative.png').read_bytes() ==
          (tmp_path / 'exp' / 'report' / 'qualitative.png').read_bytes())
  # A recorded run of the qualitative figure without its predictions trains again, equals
  # its record, and the record gains the predictions (its evaluation is kept).
  figure_record = tmp_path / 'records' / 'tce_t1_s0'
  stored = {p.name: p.read_bytes() for p in (figure_record / 'qualitative').iterdir()}
  shutil.rmtree(figure_record / 'qualitative')
  evaluation = (figure_record / 'eval' / '4.json').read_bytes()
  again = subprocess.run(base + [f'--out={tmp_path / "again"}', '--methods=mcce,tce_t1'],
                         cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                         timeout=600, check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'tce_t1_s0 trained again: its evaluation equals the record exactly' in again.stdout
  assert not os.path.exists(tmp_path / 'again' / 'mcce_s0')  # the reference: from its record
  assert {p.name: p.read_bytes() for p in (figure_record / 'qualitative').iterdir()} == stored
  assert (figure_record / 'eval' / '4.json').read_bytes() == evaluation
  # A record made with another config is refused, not reused.
  stale = tmp_path / 'records' / 'tce_t1_s0' / 'config.json'
  saved = json.loads(stale.read_text())
  saved['tce']['t'] = 5.0
  stale.write_text(json.dumps(saved))
  refused = subprocess.run(base + [f'--out={tmp_path / "stale"}', '--methods=tce_t1'], cwd=ROOT,
                           env=subprocess_env(), capture_output=True, text=True, timeout=300,
                           check=False)
  assert refused.returncode != 0
  assert 'was made with another config (tce.t: recorded 5.0, now 1.0)' in refused.stderr
  subset = subprocess.run(command + ['--methods=mcce,nonsense'], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300, check=False)
  assert subset.returncode != 0 and "Unknown methods ['nonsense']" in subset.stderr


def _differences(a: str, b: str) -> dict:
  """The config fields in which two of the synthetic study's methods' runs differ (beyond
  their names)."""
  configs = [runner.run_config(STUDY, m, 0, steps=10, quick=False, data_dir=None) for m in (a, b)]
  return {k: v for k, v in workdir_lib.config_changes(*configs).items() if k != 'name'}


def test_a_study_is_one_file(tmp_path, capfd):
  """A toy study added as a new module of tce_jax/studies alone is found, planned and run
  (its smoke version, two methods of config files plus overrides, from scratch to report),
  the two runs side by side where there are two cores (`runner.train_side_by_side`); there a
  SIGTERM to the runner stops both runs at a checkpoint, and the same call resumes them."""
  import tce_jax.studies as package  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(package.__file__), 'toy_test_study.py')
  with open(path, 'w') as f:
    f.write("from tce_jax.studies.spec import Method, Study\n\n"
            "STUDY = Study(name='toy', methods={'mcce': Method('synthetic_mcce', kind='paper'),"
            " 'uniform': Method('synthetic_uniform', {'sampling.lag': 1})})\n")
  try:
    assert 'toy_test_study' in studies.available()
    toy = studies.load('toy_test_study')
    assert toy.reference == 'mcce' and toy.kind('uniform') == 'added'
    jobs = min(2, len(os.sched_getaffinity(0)))
    out, runs = tmp_path / 'out', ('mcce_s0', 'uniform_s0')
    study = functools.partial(runner.run_study, toy, str(out), seeds=1, steps=40, quick=True,
                              data_dir=str(tmp_path / 'tfds'), jobs=jobs)
    if jobs == 2:
      # The runner takes signals in the main thread only (pytest-xdist runs tests there).
      assert threading.current_thread() is threading.main_thread()
      stopper = threading.Thread(target=_stop_runner_at_checkpoint, args=(out, runs))
      stopper.start()
      with pytest.raises(runner.Stopped, match='Stopped by SIGTERM: .* each resuming') as e:
        study()
      stopper.join()
      assert all(run in str(e.value) for run in runs) and e.value.exit_code == 128 + signal.SIGTERM
      for run in runs:
        saved = [int(p) for p in os.listdir(out / run / 'checkpoints') if p.isdigit()]
        assert 8 <= max(saved) < 40, (run, saved)
      assert 'Received SIGTERM' in capfd.readouterr().err
    result = study()
    assert list(result['labels']) == ['mcce', 'uniform']
    if jobs == 2:  # each run in its own process, on its own core, its console in its log
      for run in runs:
        with open(out / f'{run}.log') as f:
          log = f.read()
        assert 'Training ' in log and 'Resumed from the checkpoint of step' in log, run
      assert 'training on cores [' in capfd.readouterr().out
    assert (out / 'report' / 'summary.md').stat().st_size > 0
    with open(out / 'uniform_s0' / 'config.json') as f:
      saved = json.load(f)
    assert saved['sampling']['lag'] == 1 and saved['tce']['t'] == 0.0
  finally:
    os.remove(path)
  with pytest.raises(ValueError, match="No study 'toy_test_study'; studies: .*synthetic"):
    studies.load('toy_test_study')


def test_a_run_that_ctrl_c_reaches_while_it_starts_counts_as_stopped(make_tiny_config,
                                                                    tmp_path):
  """Ctrl-C reaches a side-by-side run's process before its training loop catches signals
  (here while it generates its dataset): it ends as killed by SIGINT, without a traceback,
  which the runner reads as stopped (`preemption.stop_signal`), not as failed."""
  config = make_tiny_config({'dataset.data_dir': str(tmp_path / 'tfds')})
  log = tmp_path / 'run.log'
  process = multiprocessing.get_context('spawn').Process(
      target=runner._train_pinned,  # pylint: disable=protected-access
      args=(config, str(tmp_path / 'run'), os.sched_getaffinity(0), str(tmp_path / 'cache'),
            str(log)))
  # The runner spawns its runs with its own SIGINT handler installed, so they start with
  # SIGINT at its default whatever the runner inherited (a job started in the background of
  # a shell inherits it ignored, and so would a run spawned from here); the same here.
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    process.start()
  finally:
    signal.signal(signal.SIGINT, previous)
  deadline = time.time() + 120
  while not log.exists():  # opened first thing in the run's process
    assert process.is_alive() and time.time() < deadline, 'the run ended before the signal'
    time.sleep(0.01)
  os.kill(process.pid, signal.SIGINT)
  process.join(timeout=120)
  assert preemption.stop_signal(process.exitcode) == signal.SIGINT, process.exitcode
  assert 'Traceback' not in log.read_text()


def _stop_runner_at_checkpoint(out, runs) -> None:
  """Pauses each run once its step-8 checkpoint is written (so that it is still mid-run for
  the signal), sends SIGTERM to this process (the runner), and lets each run go on once the
  runner has passed the signal on to it."""
  deadline, paused = time.time() + 600, []
  while len(paused) < len(runs) and time.time() < deadline:
    for run in runs:
      if (out / run / 'checkpoints' / '8').exists() and run not in dict(paused):
        with open(out / run / workdir_lib.LOCK) as f:
          pid = json.load(f)['pid']
        os.kill(pid, signal.SIGSTOP)
        paused.append((run, pid))
    time.sleep(0.01)
  os.kill(os.getpid(), signal.SIGTERM)
  for _, pid in paused:
    while not _pending(pid, signal.SIGTERM) and time.time() < deadline:
      time.sleep(0.01)
    os.kill(pid, signal.SIGCONT)


def _pending(pid: int, signum: int) -> bool:
  """Whether signal `signum` waits to be delivered to process `pid` (Linux's /proc)."""
  with open(f'/proc/{pid}/status') as f:
    masks = [line.split()[1] for line in f if line.startswith(('SigPnd:', 'ShdPnd:'))]
  return any(int(mask, 16) >> (signum - 1) & 1 for mask in masks)


def _entry(runs, iou, stats):
  """A report.json label entry: per-class IoU and fairness as (mean, std) pairs."""
  return {'runs': ['r'] * runs,
          'per_class_iou': {c: {'mean': m, 'std': s} for c, (m, s) in iou.items()},
          'fairness': {k: {'mean': m, 'std': s} for k, (m, s) in stats.items()}}


def test_summary_intervals_holm_and_class_counts():
  stats = {k: (10.0, 1.0) for k in summary_lib.SUMMARY_STATS}
  reference = _entry(3, {'a': (10.0, 1.0), 'b': (50.0, 1.0), 'c': (5.0, 2.0),
                         'gone': (None, None)}, stats)
  # 'a' clearly better, 'b' clearly worse, 'c' inside the noise; mIoU +0.5 within noise, the
  # worst class +10 beyond it even after Holm over the 5 statistics.
  method = _entry(3, {'a': (30.0, 1.0), 'b': (20.0, 1.0), 'c': (6.0, 2.0),
                      'gone': (None, None)}, {**stats, 'miou': (10.5, 1.0), 'worst': (20.0, 1.0)})
  text = summary_lib.summary({'reference': 'mcce', 'labels': {'mcce': reference,
                                                             'tce': method}})
  rows = [line for line in text.splitlines() if line.startswith('| mcce') or
          line.startswith('| tce')]
  assert len(rows) == 3  # reference, method, and the method's adjusted p-values
  assert rows[1].endswith('| 1 / 1 (1 / 1) |')  # one method: the table is its classes
  # Welch: se = sqrt(2 / 3), df = 4, t_0.975(4) = 2.776: +0.5 [-1.8, +2.8], p 0.573; Holm over
  # the 5 statistics: the worst class's p x 5, then 0.573 x 4 -> 1, the ties at p = 1 stay 1.
  assert '| 10.5 ± 1.0 (+0.5 [-1.8, +2.8]) |' in rows[1]
  assert '**20.0 ± 1.0 (+10.0 [+7.7, +12.3])**' in rows[1]
  p_worst = 2 * scipy_stats.t.sf(10 / np.sqrt(2 / 3), 4)
  assert rows[2] == f'| tce | 1 | 1 | 1 | {min(1, 5 * p_worst):.3g} | 1 |'
  single = summary_lib.summary({'reference': 'mcce', 'labels': {
      'mcce': _entry(1, {'a': (1.0, 0.0)}, stats), 'tce': _entry(1, {'a': (2.0, 0.0)}, stats)}})
  row = next(line for line in single.splitlines() if line.startswith('| tce | 1 |'))
  assert '(+0.0)' in row and row.endswith('| 0 / 0 (0 / 0) |') and '**' not in row
  assert '| tce | - | - | - | - | - |' in single  # no p-values with one seed
  families = summary_lib.summary(
      {'reference': 'mcce', 'labels': {'mcce': reference, 'tce': method, 'tce_t10': method}},
      {'Methods': ['tce'], 't sweep': ['tce_t10']})
  main, sweep = families.split('### t sweep')
  assert main.startswith('### Methods') and 'tce_t10' not in main and '| tce |' in main
  assert '| tce_t10 |' in sweep and '| tce |' not in sweep


def test_benchmark_profile_figures(tmp_path):
  """The five figures of the benchmark issue from per-seed eval records (classes absent from
  the split left out)."""
  rng = np.random.default_rng(0)
  iou = rng.uniform(0, 100, (3, 8))
  iou[1, 2] = 0.0
  workdirs = []
  for seed in range(3):
    workdir = tmp_path / f'mcce_s{seed}'
    (workdir / 'eval').mkdir(parents=True)
    per_class = {f'c{k}': float(iou[seed, k]) for k in range(8)}
    per_class['absent'] = None
    with open(workdir / 'eval' / '10.json', 'w') as f:
      json.dump({'per_class_iou': per_class, 'miou': float(iou[seed].mean())}, f)
    workdirs.append(str(workdir))
  figures, classes, table = profile_lib.benchmark_profile(workdirs, 10)
  mean = np.sort(iou.mean(0))
  np.testing.assert_allclose([figures['worst'], figures['bottom5'], figures['top5'],
                              figures['std'], figures['seed_std'], figures['min_any_seed']],
                             [mean[0], mean[:5].mean(), mean[-5:].mean(), np.std(mean, ddof=1),
                              np.std(iou.mean(1), ddof=1), 0.0])
  assert classes[-1] == 'absent' and np.isnan(table[:, -1]).all()
  text = profile_lib.profile_table(figures, classes, table, 'mcce',
                                   targets=STUDY.profile_targets)
  assert '| lowest class IoU in any seed | 0.0 | > 0 | | **no** |' in text


def test_study_runs_go_seed_by_seed_with_fewer_sweep_seeds():
  methods = ['mcce', 'tce_t1', 'tce_t10']
  runs = runner.study_runs(STUDY, methods, seeds=5, sweep_seeds=3)
  assert runs[:3] == [('mcce', 0), ('tce_t1', 0), ('tce_t10', 0)]
  assert [r for r in runs if r[0] == 'tce_t10'] == [('tce_t10', s) for s in range(3)]
  assert [r for r in runs if r[0] == 'mcce'] == [('mcce', s) for s in range(5)]
  assert len(runs) == len(set(runs)) == 5 + 5 + 3
  # Any prefix holds every main method's seeds 0..k-1 before any seed k.
  seeds_seen = [s for m, s in runs if m != 'tce_t10']
  assert seeds_seen == sorted(seeds_seen)
  assert runner.study_runs(STUDY, methods, seeds=2, sweep_seeds=3)[-1] == ('tce_t10', 1)
  # The sweep trains the t = 1 method's code path at other t only.
  for method in STUDY.sweep:
    base = method.rsplit('_t', 1)[0] + '_t1'
    assert set(_differences(base, method)) == {'tce.t'}, method


def test_notrain_reports_the_recorded_runs_and_leaves_out_the_rest(tmp_path, capsys):
  """--notrain: the committed records of the study (MCCE seeds 0-1, Focal seed 0) are
  reported, Focal seed 1 (not recorded) is left out and named, and nothing trains."""
  records = tmp_path / 'records'
  for run in ('mcce_s0', 'mcce_s1', 'focal_s0'):  # without predictions: no dataset needed
    shutil.copytree(os.path.join(ROOT, 'docs', 'results', 'runs', run), records / run,
                    ignore=shutil.ignore_patterns('qualitative'))
  fixed = ('rider', 'motorcycle')  # a sensitivity check on classes named in advance
  result = runner.run_study(dataclasses.replace(STUDY, fixed_classes=fixed),
                            str(tmp_path / 'out'), seeds=2, methods=['mcce', 'focal'],
                            records=str(records), train_missing=False,
                            report_dir=str(tmp_path / 'report'))
  printed = capsys.readouterr().out
  # Each label's fixed_bottom: per run the mean IoU of the named classes, then mean and
  # sample std over the runs, re-derived in float64 from the records' evaluations.
  for method, seeds in (('mcce', (0, 1)), ('focal', (0,))):
    per_run = []
    for seed in seeds:
      with open(records / f'{method}_s{seed}' / 'eval' / '5000.json') as f:
        iou = json.load(f)['per_class_iou']
      per_run.append(np.mean([iou[c] for c in fixed], dtype=np.float64))
    got = result['labels'][method]['fairness']['fixed_bottom']
    assert got['mean'] == pytest.approx(np.mean(per_run), abs=1e-9), method
    assert got['std'] == (pytest.approx(np.std(per_run, ddof=1), abs=1e-9)
                          if len(per_run) > 1 else None), method
  assert result['fixed_classes'] == list(fixed)
  with open(tmp_path / 'report' / 'summary.md') as f:
    text = f.read()
  section = text.split('### Sensitivity: the bottom statistic on classes named in advance')[1]
  assert '| mcce -> focal | 2 / 1 |' in section.split('### Benchmark profile')[0]
  assert 'Not finished, left out of the report: 1 runs (focal_s1)' in printed
  assert 'No qualitative figure: the reference has no finished seed-1 run' in printed
  assert [len(result['labels'][m]['runs']) for m in ('mcce', 'focal')] == [2, 1]
  assert not (tmp_path / 'out' / 'focal_s1').exists()  # nothing trained
  for name in ('summary.md', 'pareto.png', 'per_class_iou.png', 'report.json'):
    assert (tmp_path / 'report' / name).stat().st_size > 0
  with pytest.raises(ValueError, match='No finished run of the reference method focal'):
    runner.run_study(STUDY, str(tmp_path / 'out'), seeds=2, methods=['focal', 'mcce'],
                     records=str(tmp_path / 'empty'), train_missing=False)


def test_equivalence_verdicts_and_their_correction():
  """Each verdict from its tests: equivalence needs the 90% interval inside the margin after
  Holm over the table's equivalence tests; a failed difference test alone is inconclusive."""
  stats = {k: (50.0, 0.5) for k in summary_lib.SUMMARY_STATS}
  iou = {'a': (50.0, 0.5)}
  labels = {'mcce': _entry(5, iou, {**stats, 'miou': (50.0, 0.1)}),
            'close': _entry(5, iou, {**stats, 'miou': (50.1, 0.1)}),
            'far': _entry(5, iou, {**stats, 'miou': (60.0, 0.5)}),
            'noisy': _entry(5, iou, {**stats, 'miou': (50.0, 5.0)}),
            'small': _entry(5, iou, {**stats, 'miou': (50.5, 0.1)})}
  text = summary_lib.summary({'reference': 'mcce', 'labels': labels},
                             {'Methods': ['close', 'far', 'noisy', 'small']}, {'miou': 1.0})
  verdicts = {line.split(' | ')[0][2:].split(' -> ')[1]: line.split(' | ')[-1][:-2]
              for line in text.splitlines() if line.startswith('| mcce -> ')}
  assert verdicts == {'close': 'equivalent (±1)', 'far': 'differs', 'noisy': 'inconclusive',
                      'small': 'differs, within ±1'}, verdicts
  # close: diff +0.1, se sqrt(0.004), df 8; TOST p = sf((1 - 0.1) / se, 8), Holm x 4 tests.
  p = scipy_stats.t.sf(0.9 / np.sqrt(0.004), 8)
  row = next(line for line in text.splitlines() if line.startswith('| mcce -> close'))
  assert row.split(' | ')[2] == f'{min(1.0, 4 * p):.3g}'
  assert 'over the 4 equivalence tests' in text


def test_sensitivity_on_classes_named_in_advance():
  """The fixed-classes section: Welch on fixed_bottom per pair, Holm over each family's pairs
  (a method against itself dropped), the equivalence verdict with the given margin; families
  without their runs are left out, and a report without fixed classes has no section."""
  stats = {k: (50.0, 1.0) for k in summary_lib.SUMMARY_STATS}
  iou = {'a': (50.0, 1.0)}
  labels = {'mcce': _entry(5, iou, {**stats, 'fixed_bottom': (20.0, 1.0)}),
            'up': _entry(5, iou, {**stats, 'fixed_bottom': (30.0, 1.0)}),
            'same': _entry(5, iou, {**stats, 'fixed_bottom': (20.1, 0.2)})}
  report_json = {'reference': 'mcce', 'labels': labels, 'fixed_classes': ['pole', 'sign']}
  text = summary_lib.fixed_classes_section(
      report_json, {'Methods': [('mcce', 'mcce'), ('up', 'mcce'), ('same', 'mcce')],
                    'Gone': [('tce_t10', 'up')]}, 2.0, 'Sensitivity')
  assert text.startswith('### Sensitivity') and '#### Methods' in text and 'Gone' not in text
  assert 'mcce -> mcce' not in text  # the reference against itself is no comparison
  assert 'mean IoU of pole, sign' in text and 'tce_t10' not in text
  welch = stats_lib.welch(30.0, 1.0, 5, 20.0, 1.0, 5)
  row = next(line for line in text.splitlines() if line.startswith('| mcce -> up | 5 / 5 |'))
  assert f"**{welch['diff']:+.1f} [{welch['low']:+.1f}, {welch['high']:+.1f}]**" in row
  assert row.endswith(f"| {min(1.0, 2 * welch['p']):.3g} |")  # Holm over the 2 pairs
  verdicts = {line.split(' | ')[0][2:]: line.split(' | ')[-1][:-2]
              for line in text.splitlines() if line.startswith('| mcce -> ') and
              line.count(' | ') == 3}
  assert verdicts == {'mcce -> up': 'differs', 'mcce -> same': 'equivalent (±2)'}, verdicts
  assert summary_lib.fixed_classes_section({'reference': 'mcce', 'labels': labels},
                                           {'Methods': [('up', 'mcce')]}, 2.0) == ''
  # A class the dataset lacks is named; the smoke version keeps those its dataset has.
  config = runner.run_config(STUDY, 'mcce', 0, steps=10, quick=False, data_dir=None)
  named = dataclasses.replace(STUDY, fixed_classes=('rider', 'nowhere'))
  with pytest.raises(ValueError, match=r"The fixed_classes \['nowhere'\] of study synthetic"):
    runner.study_classes(named, 'fixed_classes', config)
  assert runner.study_classes(named, 'fixed_classes', config, quick=True) == ['rider']
  assert runner.study_classes(STUDY, 'fixed_classes', config) == []


def test_ablations_isolate_one_reason_and_correct_over_their_family():
  # Each pair differs in the one thing its question names (docs/method.md's reasons).
  changed = {'signal': {'tce.signal'}, 'tilt': {'tce.t'}, 'size prior': {'tce.size_prior'},
             'crop': {k for k, v in CLASS_CROP.items()
                      if config_fields('default', k)[k] != v}}  # min_pixels: the default
  assert changed['crop'] == {'sampling.class_crop.retries'}
  for title in ('Ablations', 't sweep ablations'):  # the one-reason families
    for question, baseline, variant in STUDY.ablations[title]:
      differ = set(_differences(baseline, variant))
      assert differ == changed[question.split(',')[0]], (question, baseline, variant)
  stats = {k: (10.0, 1.0) for k in summary_lib.SUMMARY_STATS}
  base = _entry(3, {'a': (10.0, 1.0), 'b': (50.0, 1.0)}, stats)
  # mIoU +0.5 within the noise; the worst class +10 beyond it after Holm over 2 x 5 tests.
  better = _entry(4, {'a': (30.0, 1.0), 'b': (50.0, 1.0)},
                  {**stats, 'miou': (10.5, 1.0), 'worst': (20.0, 1.0)})
  labels = {'mcce': base, 'tce_t1': base, 'tce_crop_t1': better, 'uniform': base}
  text = summary_lib.ablations({'reference': 'mcce', 'labels': labels}, {
      'Ablations': [('crop', 'tce_t1', 'tce_crop_t1'), ('crop', 'uniform', 'tce_t1'),
                    ('crop, t = 0', 'uniform', 'uniform_crop')],  # uniform_crop: no runs
      'Empty': [('tilt', 'tce_t1', 'tce_t10')]})
  assert '### Empty' not in text and 'uniform_crop' not in text
  row = next(line for line in text.splitlines() if line.startswith('| crop | tce_t1 |'))
  assert (row.startswith('| crop | tce_t1 | tce_crop_t1 | 3 / 4 | ') and
          row.endswith('| 1 / 0 (1 / 0) |'))
  welch = stats_lib.welch(20.0, 1.0, 4, 10.0, 1.0, 3)
  assert f"**+10.0 [{welch['low']:+.1f}, {welch['high']:+.1f}]**" in row
  assert '| +0.5 [' in row and '**+0.5' not in row
  assert 'Holm\'s correction over the 10 comparisons' in text  # 2 rows x 5 statistics
  p_row = next(line for line in text.splitlines() if line.startswith('| tce_t1 -> tce_crop'))
  assert p_row.split(' | ')[4] == f"{min(1.0, 10 * welch['p']):.3g}"  # the worst class's
  assert summary_lib.ablations({'reference': 'mcce', 'labels': {'mcce': base}},
                              STUDY.ablations) == ''


def test_sweep_series_hold_one_method_at_several_t():
  for title, points in STUDY.sweep_series.items():
    others = set()
    for t, method in points.items():
      config = runner.run_config(STUDY, method, 0, steps=10, quick=False, data_dir=None)
      assert config.tce.t == t, (title, method)
      if t != 0:  # t = 0 (uniform draws) has no signal to choose
        flat = workdir_lib.config_dict(config)
        others.add(json.dumps({k: v for k, v in flat.items() if k not in ('name', 'tce')},
                              sort_keys=True) + str({k: v for k, v in flat['tce'].items()
                                                     if k != 't'}))
    assert len(others) == 1, title
