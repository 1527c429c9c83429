"""Faults: SIGKILL and resume, non-finite steps, bad records, bad workdirs and checkpoints;
and fuzzing of the losses and the sampler."""

import os
import signal
import subprocess
import time

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tce_jax import losses
from tce_jax import sampling
from tce_jax import train
from tce_jax import train_step
from tce_jax.data import datasets
from tce_jax.data import pipeline

from conftest import kill_test_command, ROOT, subprocess_env


def final_params(workdir):
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    return manager.latest_step(), manager.restore(manager.latest_step())['params']


def test_sigkill_and_restart_reaches_the_same_parameters(tmp_path, straight_run):
  """A real SIGKILL mid-run, plus a checkpoint left half-written; the restarted command
  resumes from the last complete checkpoint and ends bit-identical to an uninterrupted run."""
  env = subprocess_env()
  straight_dir, data_dir = straight_run
  killed_dir = tmp_path / 'killed'
  process = subprocess.Popen(kill_test_command(killed_dir, data_dir), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not (killed_dir / 'checkpoints' / '8').exists():
    assert process.poll() is None and time.time() < deadline, 'run ended before the kill'
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  steps = sorted(int(p) for p in os.listdir(killed_dir / 'checkpoints') if p.isdigit())
  assert steps and steps[-1] < 40, steps
  # What a kill during a save leaves behind: orbax's temporary directory, never "complete".
  partial = killed_dir / 'checkpoints' / f'{steps[-1] + 4}.orbax-checkpoint-tmp-1234567'
  partial.mkdir()
  (partial / 'junk').write_text('half-written')

  resumed = subprocess.run(kill_test_command(killed_dir, data_dir), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600, check=False)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert 'Resumed from the checkpoint of step' in resumed.stderr
  (step_a, a), (step_b, b) = final_params(straight_dir), final_params(killed_dir)
  assert step_a == step_b == 40
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def nan_at_step_2(monkeypatch):
  real = train_step.make_loss_fn

  def make_loss_fn(config, class_weights):
    loss_fn = real(config, class_weights)
    return lambda logits, labels, step, axis_name: jnp.where(
        step == 2, jnp.nan, loss_fn(logits, labels, step, axis_name))

  monkeypatch.setattr(train_step, 'make_loss_fn', make_loss_fn)


def test_nonfinite_stop_keeps_only_finite_checkpoints(make_tiny_config, tmp_path, monkeypatch):
  nan_at_step_2(monkeypatch)
  config = make_tiny_config({'train.checkpoint_every': 1, 'train.log_every': 4})
  with pytest.raises(FloatingPointError, match='at step 3 .*latest: step 2'):
    train.train_and_evaluate(config, str(tmp_path))
  step, params = final_params(tmp_path)
  assert step == 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_nonfinite_skip_skips_and_counts(make_tiny_config, tmp_path, monkeypatch):
  nan_at_step_2(monkeypatch)
  config = make_tiny_config({'train.nonfinite': 'skip'})
  train.train_and_evaluate(config, str(tmp_path))
  with ocp.CheckpointManager(os.path.join(tmp_path, 'checkpoints')) as manager:
    state = manager.restore(manager.latest_step())
  assert int(state['nonfinite_steps']) == 1 and int(state['step']) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state['params']))


def test_checkpoint_of_another_model_is_a_clear_error(make_tiny_config, tmp_path):
  train.train_and_evaluate(make_tiny_config({'train.num_steps': 2}), str(tmp_path))
  with pytest.raises(ValueError, match=r'config\.model\.width: 8 -> 16'):  # refused at once
    train.train_and_evaluate(make_tiny_config({'model.width': 16}), str(tmp_path))
  with pytest.raises(ValueError, match='does not fit this config'):  # told to go on anyway
    train.train_and_evaluate(make_tiny_config({'model.width': 16}), str(tmp_path),
                             allow_config_changes=True)


def test_unwritable_workdir_is_a_clear_error(make_tiny_config, tmp_path):
  (tmp_path / 'a_file').write_text('')
  with pytest.raises(ValueError, match=r'cannot be created: .*a_file is a file, not a folder'):
    train.train_and_evaluate(make_tiny_config(), str(tmp_path / 'a_file' / 'run'))
  with pytest.raises(ValueError, match=r'a_file cannot be created: .*a_file is a file'):
    train.train_and_evaluate(make_tiny_config(), str(tmp_path / 'a_file'))  # the workdir


class FlakyRecords:
  """Records in memory; record 3 has a label id outside the classes."""

  def __len__(self):
    return 8

  def __getitem__(self, i):
    label = np.full((8, 8, 1), i % 3, np.uint8)
    if i == 3:
      label[0, 0] = 77
    return {'image': np.full((8, 8, 3), i, np.uint8), 'segmentation_label': label}


@pytest.mark.parametrize('skip', [False, True])
def test_bad_record_at_training_time(skip):
  source = datasets.SegmentationSource(FlakyRecords(), name='toy', split='train',
                                       num_classes=3)
  batches = pipeline.TrainBatches(source, global_batch_size=8, seed=0, crop_size=(8, 8),
                                  scales=(1.0,), flip=False, skip_bad_records=skip)
  if not skip:
    with pytest.raises(datasets.DataError, match=r"'toy', split 'train', record 3.*step 0"):
      batches(0)
    return
  batch = batches(0)
  assert batch['label'].shape == (8, 8, 8) and (batch['label'] < 3).all()
  assert batches.skipped == 1
  assert 3 not in {int(v) for v in batch['image'][:, 0, 0, 0]}


@settings(max_examples=12, deadline=None)  # each example compiles new shapes
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(2, 7),
       st.floats(0.1, 1e4), st.floats(-100, 100), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_fuzz_losses_never_nan(b, h, w, k, scale, t, ignore_frac, seed):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(b, h, w, k)) * scale).astype(np.float32)
  labels = rng.integers(0, k, (b, h, w))
  labels[rng.uniform(size=labels.shape) < ignore_frac] = 255
  for name, fn in losses.LOSSES.items():
    # Jitted with labels and t as arguments, as training calls the losses (and one program
    # per loss compiles in half the time of the op-by-op dispatch's many small ones).
    args = (np.float32(t),) if name.startswith('tce') else ()
    value, grad = jax.jit(jax.value_and_grad(lambda x, y, *a, fn=fn: fn(x, y, *a)))(
        logits, labels, *args)
    assert np.isfinite(value), (name, value)
    assert np.all(np.isfinite(grad)), name


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0, 1e4)), min_size=1, max_size=30),
       st.floats(-100, 100), st.floats(1e-3, 1.0))
def test_fuzz_sampler_stays_a_distribution(updates, t, gamma):
  state = sampling.init_sampler(5, t)
  for cls, loss in updates:
    state = sampling.update_sampler(state, cls, jnp.float32(loss), t=t, gamma=gamma)
  probs = np.asarray(sampling.class_probabilities(state))
  assert np.all(np.isfinite(probs)) and abs(probs.sum() - 1) < 1e-5
  assert 0 <= int(sampling.draw_class(state, jax.random.PRNGKey(0))) < 5


@pytest.fixture
def tiny_disk(tmp_path):
  """A 3 MB tmpfs: room for one tiny checkpoint, not for two."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3M', 'tmpfs', str(mount)],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    pytest.skip(f'cannot mount a small tmpfs here: {result.stderr.strip()}')
  yield mount
  subprocess.run(['umount', str(mount)], check=False)


def test_disk_full_is_a_clear_error_and_leaves_complete_checkpoints(make_tiny_config,
                                                                    tiny_disk):
  config = make_tiny_config({'train.num_steps': 30, 'train.checkpoint_every': 1,
                             'train.keep_checkpoints': 100, 'train.eval_every': 100})
  with pytest.raises(OSError, match='No space left on device.*Complete checkpoints: \\[1'):
    train.train_and_evaluate(config, str(tiny_disk / 'run'))
  with ocp.CheckpointManager(os.path.join(tiny_disk, 'run', 'checkpoints')) as manager:
    steps = manager.all_steps()
    assert steps and max(steps) < 30
    for step in steps:  # every checkpoint that looks complete is complete
      manager.restore(step)


def test_full_disk_while_writing_a_record_names_it_and_leaves_no_temporary(tiny_disk):
  from tce_jax import records  # pylint: disable=g-import-not-at-top
  (tiny_disk / 'filler').write_bytes(b'x' * (3 * 2**20 - 8192))  # the disk nearly full
  path = tiny_disk / 'eval' / '20.json'
  path.parent.mkdir()
  with pytest.raises(OSError, match=f'Writing {path} failed: No space left on device'):
    records.write_json(str(path), {'miou': [0.5] * 100_000})
  assert os.listdir(path.parent) == []  # no empty or partial eval/20.json.tmp


def test_lower_keep_checkpoints_prunes_at_the_next_start(make_tiny_config, tmp_path):
  config = make_tiny_config({'train.num_steps': 4, 'train.checkpoint_every': 1,
                             'train.keep_checkpoints': 10, 'train.eval_every': 100})
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  checkpoints = tmp_path / 'run' / 'checkpoints'
  assert sorted(int(p) for p in os.listdir(checkpoints) if p.isdigit()) == [1, 2, 3, 4]
  config.train.keep_checkpoints = 2
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert sorted(int(p) for p in os.listdir(checkpoints) if p.isdigit()) == [3, 4]
