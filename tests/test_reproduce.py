"""The paper's reproduction plan (scripts/reproduce.py, docs/reproduce.md): printed as the
runbook says, and rehearsed end to end on fake archives with random weights."""

import json
import os
import re
import subprocess
import sys

import pytest

import reproduce  # scripts/, on the path

from conftest import ROOT, subprocess_env

LABELS = ('mcce', 'focal', 'tce_t0.1', 'tce_t1')


@pytest.mark.slow
def test_dry_run_trains_evaluates_and_reports_every_paper_config(tmp_path):
  out = tmp_path / 'dry'
  # On ResNet-18 to keep the suite short; the default dry run is the same path on ResNet-101.
  # ~7 min on an idle 2-core machine; the limit leaves room for a machine shared with training.
  result = subprocess.run([sys.executable, 'scripts/reproduce.py', '--dry_run', f'--out={out}',
                           '--dry_run_backbone=resnet18', '--dry_run_width=8'],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=1800, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert 'Dry run passed' in result.stdout
  weights = str(out / 'weights' / 'resnet18_random')
  for dataset, classes, resolution in (('cityscapes', 19, 'resized'),
                                       ('ade20k', 150, 'original')):
    for label in LABELS:
      run = out / 'runs' / dataset / f'{label}_s0'
      with open(run / 'config.json') as f:
        config = json.load(f)
      assert config['model']['backbone'] == 'resnet18'
      assert config['model']['pretrained'] == weights  # the converted torchvision file
      assert config['name'] == f'{dataset}_{label.split("_")[0]}'
      with open(run / 'eval' / '2.json') as f:
        record = json.load(f)
      assert len(record['per_class_iou']) == classes
      assert record['protocol']['resolution'] == resolution
      assert record['protocol']['scales'] == [1.0] and not record['protocol']['flip']
    with open(out / 'runs' / dataset / 'tce_t0.1_s0' / 'config.json') as f:
      assert json.load(f)['tce']['t'] == 0.1
    report = (out / 'runs' / dataset / 'report' / 'report.md').read_text()
    assert all(f'- {label}: 1 run, step 2, backbone pretrained (' in report
               for label in LABELS), report[:2000]
    assert 'Warning' not in report
    fraction = 0.25 if dataset == 'cityscapes' else 0.15
    with open(out / 'runs' / dataset / 'report' / 'report.json') as f:
      assert json.load(f)['fraction'] == fraction


def test_plan_is_the_runbook():
  """Every command of docs/reproduce.md's plan is one the script prints, and the plan holds
  4 methods x seeds trainings and evaluations per dataset, then its report."""
  steps = reproduce.plan(datasets=['cityscapes', 'ade20k'], seeds=3, out='runs/paper',
                         data_dir=None, archives={'cityscapes': '$CITYSCAPES_DIR',
                                                  'ade20k': '$ADE20K_DIR'},
                         imagenet_weights='resnet101.safetensors',
                         weights='weights/resnet101_imagenet')
  kinds = [s.argv[1:3] for s in steps]
  assert sum(k == ('-m', 'tce_jax.main') for k in kinds) == 2 * 4 * 3
  assert sum(k == ('-m', 'tce_jax.evaluate') for k in kinds) == 2 * 4 * 3
  assert sum(k == ('-m', 'tce_jax.report') for k in kinds) == 2
  printed = {s.shell() for s in steps}
  with open(os.path.join(ROOT, 'docs', 'reproduce.md')) as f:
    doc = f.read()
  documented = [line.strip() for line in doc.splitlines()
                if re.match(r'^python (scripts/convert_resnet|-m tce_jax\.(prepare|main|evaluate|'
                            r'report))', line.strip()) and '--config.seed=' in line
                or line.strip().startswith('python -m tce_jax.report --runs runs/paper/')]
  assert documented, 'docs/reproduce.md lists no command of the plan'
  for line in documented:
    assert line in printed, line
