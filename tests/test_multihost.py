"""Multi-host data parallelism on JAX's own runtime (jax.distributed, gloo collectives on CPU):
2 processes x 2 devices on localhost train like 1 process with 4 devices."""

import json
import os
import socket
import subprocess

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import main_command, ROOT, subprocess_env

# SGD, not the benchmark's AdamW: Adam divides each update by the gradient's own magnitude,
# so a parameter whose gradient is ~0 moves by ~lr in a direction set by float32 summation
# order, and the two runs could not be compared at the tolerance that catches a wrong batch
# split (the update rule itself is checked against torch's formulas in test_train).
STEPS = ['--config.train.num_steps=6', '--config.train.log_every=3',
         '--config.train.eval_every=6', '--config.train.checkpoint_every=3',
         '--config.train.optimizer=sgd', '--config.train.learning_rate=0.01',
         '--config.train.weight_decay=5e-4']


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_four_devices(tmp_path):
  """Stochastic TCE: one global class draw per step, each process loads its half of the
  batch, BatchNorm and gradients reduce across processes, process 0 writes the records."""
  single = subprocess.run(
      main_command('configs/synthetic_tce.py', tmp_path / 'single', tmp_path / 'data1',
                   '--config.tce.t=1.0', *STEPS),
      cwd=ROOT, env=subprocess_env(4), capture_output=True, text=True, timeout=600,
      check=False)
  assert single.returncode == 0, single.stderr[-3000:]

  port = free_port()
  processes = [subprocess.Popen(
      main_command('configs/synthetic_tce.py', tmp_path / 'multi', tmp_path / 'data2',
                   '--config.tce.t=1.0', *STEPS, f'--coordinator_address=localhost:{port}',
                   '--num_processes=2', f'--process_id={i}'),
      cwd=ROOT, env=subprocess_env(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in processes]
  for p, (_, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
  assert 'on 4 devices (2 processes)' in outputs[0][1]

  def final_state(workdir):
    """The step-6 checkpoint as numpy arrays (it was saved on 4 devices; this process has 2)."""
    path = os.path.join(workdir, 'checkpoints', '6', 'default')
    with ocp.PyTreeCheckpointer() as checkpointer:
      metadata = checkpointer.metadata(path)
      tree = getattr(metadata, 'item_metadata', metadata)
      tree = getattr(tree, 'tree', tree)
      return checkpointer.restore(path, restore_args=jax.tree.map(
          lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree))

  one, two = final_state(tmp_path / 'single'), final_state(tmp_path / 'multi')
  np.testing.assert_array_equal(one['sampler']['draw_counts'], two['sampler']['draw_counts'])
  for a, b in zip(jax.tree.leaves((one['params'], one['batch_stats'])),
                  jax.tree.leaves((two['params'], two['batch_stats']))):
    # float32 summation order differs (cross-process all-reduce, per-device thread pools):
    # ~1e-6 after 6 steps; a wrong batch split or unsynced BatchNorm is off by >= 1e-3.
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with open(tmp_path / 'single' / 'eval' / '6.json') as f, \
      open(tmp_path / 'multi' / 'eval' / '6.json') as g:
    np.testing.assert_array_equal(json.load(f)['confusion_matrix'],
                                  json.load(g)['confusion_matrix'])
