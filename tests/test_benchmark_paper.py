"""scripts/benchmark_paper.py, the one command for a first GPU, runs on JAX's stack alone: in a
subprocess where TensorFlow, tensorflow-datasets, CLU and torch cannot be imported, on 2
forced CPU devices, at tiny sizes; its table and JSON hold every figure."""

import json
import os
import subprocess
import sys

from conftest import ROOT, subprocess_env

BLOCKER = '''
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'clu', 'torch'):
      raise ImportError(f'{name} is not installed here (blocked by the test)')
    return None
sys.meta_path.insert(0, Blocked())
'''


def test_paper_benchmark_needs_only_jax(tmp_path):
  (tmp_path / 'sitecustomize.py').write_text(BLOCKER)
  env = subprocess_env(devices=2)
  env['PYTHONPATH'] = os.pathsep.join([str(tmp_path), ROOT, env.get('PYTHONPATH', '')])
  out = tmp_path / 'bench.json'
  run = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'scripts', 'benchmark_paper.py'), '--tiny',
       '--dtypes=bfloat16', '--rounds=1', '--steps=2', '--warmup=1', f'--json={out}'],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads(out.read_text())
  assert results['devices'] == 2 and set(results['peaks']) == {'bfloat16'}
  assert [(r['setting'], r['dtype']) for r in results['runs']] == [
      ('cityscapes', 'bfloat16'), ('ade20k', 'bfloat16')]
  for r in results['runs']:
    assert r['devices'] == 2 and r['per_device_batch'] == 2
    assert 0 < r['step_ms_median'] <= r['step_ms_p90'] and r['flops_per_step'] > 0
    assert r['eval_images_per_s'] > 0 and r['host_fed_over_step'] > 0
    assert r['peak_device_bytes'] is None and r['largest_per_device_batch'] is None  # CPU
  assert 'n/a (CPU)' in run.stdout and 'not searched (CPU)' in run.stdout
  assert 'upernet / resnet18' in run.stdout
