"""The experiment script's smoke version: every method trains, the report is written, and a
second start skips the finished runs."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, subprocess_env


@pytest.mark.slow
def test_quick_experiment_runs_every_method_and_resumes(tmp_path):
  import experiment  # pylint: disable=g-import-not-at-top  (scripts/, on the path)
  command = [sys.executable, 'scripts/experiment.py', '--quick', f'--out={tmp_path / "exp"}',
             f'--data_dir={tmp_path / "tfds"}']
  first = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                         text=True, timeout=900, check=False)
  assert first.returncode == 0, first.stderr[-3000:]
  with open(tmp_path / 'exp' / 'report' / 'report.json') as f:
    report = json.load(f)
  assert report['reference'] == 'mcce'
  assert list(report['labels']) == list(experiment.METHODS)
  assert list(report['labels'])[:7] == ['mcce', 'focal', 'uniform', 'tce_t0.1', 'tce_t1',
                                        'tce_image_t1', 'tce_class_t1']
  assert {'rcs', 'focal_no_alpha', 'ce_sqrt_inv_freq', 'ohem', 'recall',
          'tce_signal_class_t1', 'tce_size_prior_t1', 'uniform_crop'} <= set(report['labels'])
  assert os.path.exists(tmp_path / 'exp' / 'report' / 'report.md')
  with open(tmp_path / 'exp' / 'report' / 'summary.md') as f:
    assert sum(line.startswith('|') for line in f) == 2 + len(experiment.METHODS)
  marker = tmp_path / 'exp' / 'tce_t1_s0' / 'eval' / '4.json'
  before = marker.stat().st_mtime_ns
  second = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=900, check=False)
  assert second.returncode == 0, second.stderr[-3000:]
  assert marker.stat().st_mtime_ns == before, 'a finished run was trained again'
  assert 'Training ' not in second.stderr
  subset = subprocess.run(command + ['--methods=mcce,nonsense'], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300, check=False)
  assert subset.returncode != 0 and "Unknown methods ['nonsense']" in subset.stderr


def _entry(runs, iou, stats):
  """A report.json label entry: per-class IoU and fairness as (mean, std) pairs."""
  return {'runs': ['r'] * runs,
          'per_class_iou': {c: {'mean': m, 'std': s} for c, (m, s) in iou.items()},
          'fairness': {k: {'mean': m, 'std': s} for k, (m, s) in stats.items()}}


def test_summary_counts_classes_beyond_seed_noise():
  import experiment  # pylint: disable=g-import-not-at-top  (scripts/, on the path)
  stats = {k: (10.0, 1.0) for k in experiment.SUMMARY_STATS}
  reference = _entry(3, {'a': (10.0, 1.0), 'b': (50.0, 1.0), 'c': (5.0, 2.0),
                         'gone': (None, None)}, stats)
  # 'a' clearly better, 'b' clearly worse, 'c' inside the noise; mIoU +0.5 within noise.
  method = _entry(3, {'a': (30.0, 1.0), 'b': (20.0, 1.0), 'c': (6.0, 2.0),
                      'gone': (None, None)}, {**stats, 'miou': (10.5, 1.0)})
  text = experiment.summary({'reference': 'mcce', 'labels': {'mcce': reference,
                                                             'tce': method}})
  rows = [line for line in text.splitlines() if line.startswith('| mcce') or
          line.startswith('| tce')]
  assert len(rows) == 2
  assert rows[1].endswith('| 1 / 1 |')
  # Welch: t = 0.5 / sqrt(2 / 3) = 0.612, df = 4; closed-form t(4) CDF gives p = 0.573.
  assert '10.5 ± 1.0 (+0.5, p 0.57)' in rows[1]
  single = experiment.summary({'reference': 'mcce', 'labels': {
      'mcce': _entry(1, {'a': (1.0, 0.0)}, stats), 'tce': _entry(1, {'a': (2.0, 0.0)}, stats)}})
  assert '(+0.0)' in single and '| 0 / 0 |' in single  # one seed: no p-values, no counts
