"""The experiment script's smoke version: every method trains, the report is written, and a
second start skips the finished runs."""

import json
import os
import subprocess
import sys

from conftest import ROOT, subprocess_env


def test_quick_experiment_runs_every_method_and_resumes(tmp_path):
  command = [sys.executable, 'scripts/experiment.py', '--quick', f'--out={tmp_path / "exp"}',
             f'--data_dir={tmp_path / "tfds"}']
  first = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                         text=True, timeout=900, check=False)
  assert first.returncode == 0, first.stderr[-3000:]
  with open(tmp_path / 'exp' / 'report' / 'report.json') as f:
    report = json.load(f)
  assert report['reference'] == 'mcce'
  assert list(report['labels']) == ['mcce', 'focal', 'uniform', 'tce_t0.1', 'tce_t1',
                                    'tce_image_t1', 'tce_class_t1']
  assert os.path.exists(tmp_path / 'exp' / 'report' / 'report.md')
  marker = tmp_path / 'exp' / 'tce_t1_s0' / 'eval' / '4.json'
  before = marker.stat().st_mtime_ns
  second = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=900, check=False)
  assert second.returncode == 0, second.stderr[-3000:]
  assert marker.stat().st_mtime_ns == before, 'a finished run was trained again'
  assert 'Training ' not in second.stderr
