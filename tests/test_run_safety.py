"""Runs that survive preemption, drift and corruption: one test per defect found by probing
(re-runs, a second process, SIGTERM, config drift, damaged checkpoints, a failing
evaluation, a damaged class-index cache, NaN in records, half-prepared datasets, long
workdirs, TensorBoard after a resume). See docs/reliability.md."""

import glob
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tce_jax import evaluation
from tce_jax import evaluator as evaluator_lib
from tce_jax import preemption
from tce_jax import records
from tce_jax import train
from tce_jax import workdir as workdir_lib
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets

from conftest import kill_test_command, ROOT, subprocess_env
from test_reliability import final_params


def _read(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope='module')
def finished_run(tiny_dataset_config, tmp_path_factory):
  """A finished 4-step run (evaluations at 2 and 4, checkpoints at 2 and 4)."""
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config(tiny_dataset_config, {'train.eval_every': 2})
  workdir = tmp_path_factory.mktemp('finished')
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def _copy_run(workdir, tmp_path):
  target = tmp_path / 'run'
  shutil.copytree(workdir, target)
  return target


# 1. A re-run of a finished run never writes a record of one step under another.
def test_rerun_of_a_finished_run_keeps_its_records(finished_run, tmp_path):
  config, original = finished_run
  workdir = _copy_run(original, tmp_path)
  before = {p: _read(p) for p in glob.glob(str(workdir / 'eval' / '*.json'))}
  again = train.train_and_evaluate(config.copy_and_resolve_references(), str(workdir))
  assert again['step'] == 4 and again == before[str(workdir / 'eval' / '4.json')]
  shorter = config.copy_and_resolve_references()
  shorter.train.num_steps = 2
  record = train.train_and_evaluate(shorter, str(workdir), allow_config_changes=True)
  assert record['step'] == 4  # the state's own step, not num_steps
  after = {p: _read(p) for p in glob.glob(str(workdir / 'eval' / '*.json'))}
  assert after == before


# 4. Config drift on resume is refused, naming the fields; harmless changes are recorded.
@pytest.mark.parametrize('field,value', [('tce.t', 1.0), ('loss.name', 'tce_class'),
                                         ('seed', 1), ('train.batch_size', 8),
                                         ('train.num_steps', 8)])
def test_resume_refuses_a_config_that_changes_the_run(finished_run, tmp_path, field, value):
  config, original = finished_run
  workdir = _copy_run(original, tmp_path)
  saved = (workdir / 'config.json').read_text()
  changed = config.copy_and_resolve_references()
  changed.update_from_flattened_dict({field: value})
  with pytest.raises(workdir_lib.WorkdirError,
                     match=rf'config\.{field}: {config_value(config, field)!r} -> {value!r}'):
    train.train_and_evaluate(changed, str(workdir))
  assert (workdir / 'config.json').read_text() == saved
  assert not os.path.exists(workdir / '.lock')


def test_fields_added_since_a_run_was_made_are_no_change(finished_run, tmp_path):
  """A run made by an older version lacks newer fields: they count at their defaults."""
  config, original = finished_run
  workdir = _copy_run(original, tmp_path)
  saved = _read(workdir / 'config.json')
  del saved['tce']['t_warmup_steps']
  (workdir / 'config.json').write_text(json.dumps(saved))
  record = train.train_and_evaluate(config.copy_and_resolve_references(), str(workdir))
  assert record['step'] == 4


def config_value(config, field):
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


def test_resume_with_an_override_keeps_the_config_history(finished_run, tmp_path):
  config, original = finished_run
  workdir = _copy_run(original, tmp_path)
  longer = config.copy_and_resolve_references()
  longer.train.num_steps = 6
  longer.train.log_every = 3  # harmless
  record = train.train_and_evaluate(longer, str(workdir), allow_config_changes=True)
  assert record['step'] == 6
  history = sorted(os.listdir(workdir / 'config_history'))
  assert history == ['0.json', '4.json']
  assert _read(workdir / 'config_history' / '0.json')['train']['num_steps'] == 4
  assert _read(workdir / 'config_history' / '4.json')['train']['num_steps'] == 6
  assert _read(workdir / 'config.json')['train']['num_steps'] == 6
  # Each training process records the code and machine it ran on, by the step it started at.
  assert sorted(os.listdir(workdir / 'environment')) == ['0.json', '4.json']
  resumed = _read(workdir / 'environment' / '4.json')
  assert resumed['host'] == socket.gethostname()
  assert resumed['packages']['jax'] == jax.__version__
  assert resumed['devices'] == sorted({d.device_kind for d in jax.devices()})
  assert resumed['since'] > _read(workdir / 'environment' / '0.json')['since']
  cpu = resumed['cpu']  # what tells two machines' CPUs apart where the model name is vague
  assert set(cpu) == {'model', 'family', 'model_number', 'stepping', 'microcode', 'count',
                      'flags', 'caches'}
  if os.path.exists('/sys/devices/system/cpu/cpu0/cache/index0/size'):  # Linux
    assert cpu['caches'] and all(len(c.split()) == 3 for c in cpu['caches']), cpu['caches']
  try:
    head = subprocess.run(['git', '-C', str(ROOT), 'rev-parse', 'HEAD'], capture_output=True,
                          text=True, check=False).stdout.strip()
  except OSError:  # no git on this machine
    head = ''
  if head:  # a git checkout (CI's and developers'): the commit the run trained with
    assert resumed['code']['commit'] == head
  harmless = longer.copy_and_resolve_references()
  harmless.train.eval_every = 3
  harmless.input.memory_cache_gb = 0.0  # a loader resource: the same batches either way
  train.train_and_evaluate(harmless, str(workdir))  # no override needed
  assert _read(workdir / 'config.json')['train']['eval_every'] == 3
  assert _read(workdir / 'config.json')['input']['memory_cache_gb'] == 0.0


# 5. A damaged latest checkpoint: fall back to the previous one, keep the damaged one aside.
@pytest.mark.parametrize('damage', ['truncate', 'delete', 'metadata'])
def test_damaged_latest_checkpoint_falls_back(finished_run, tmp_path, damage, caplog):
  config, original = finished_run
  workdir = _copy_run(original, tmp_path)
  _, expected = final_params(workdir)
  step4 = workdir / 'checkpoints' / '4'
  if damage == 'metadata':
    (step4 / 'default' / '_METADATA').write_text('garbage{')
  else:
    data = sorted(glob.glob(str(step4 / 'default' / 'ocdbt.process_0' / 'd' / '*')),
                  key=os.path.getsize)[-1]
    if damage == 'truncate':
      with open(data, 'r+b') as f:
        f.truncate(os.path.getsize(data) // 2)
    else:
      os.remove(data)
  train.train_and_evaluate(config.copy_and_resolve_references(), str(workdir))
  assert 'checkpoint of step 4' in caplog.text and 'cannot be read' in caplog.text
  assert glob.glob(str(workdir / 'checkpoints' / 'corrupt-4-*'))
  step, params = final_params(workdir)  # retrained from step 2: the same parameters
  assert step == 4
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


# 6. A failing evaluation loses no checkpoint.
def test_failing_evaluation_keeps_the_checkpoint(make_tiny_config, tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise datasets.DataError('Cannot read dataset synthetic, split validation, record 3')

  monkeypatch.setattr(evaluator_lib.Evaluator, 'write', broken)
  with pytest.raises(datasets.DataError, match='record 3'):
    train.train_and_evaluate(make_tiny_config({'train.num_steps': 2, 'train.eval_every': 2}),
                             str(tmp_path))
  with ocp.CheckpointManager(os.path.join(tmp_path, 'checkpoints')) as manager:
    assert manager.latest_step() == 2


# 7. The class-index cache heals itself and is readable by the dataset's other users.
class _Records:
  def __len__(self):
    return 4

  def __getitem__(self, i):
    return {'image': np.zeros((4, 4, 3), np.uint8),
            'segmentation_label': np.full((4, 4, 1), i % 3, np.uint8)}


@pytest.mark.parametrize('damage', [b'garbage' * 10, b'', 'truncated', 'key-missing'])
def test_damaged_class_index_cache_is_rebuilt(tmp_path, damage, caplog):
  (tmp_path / 'dataset_info.json').write_text('{}')
  os.chmod(tmp_path / 'dataset_info.json', 0o644)
  source = datasets.SegmentationSource(_Records(), name='toy', split='train', num_classes=3,
                                       cache_dir=str(tmp_path), fingerprint='toy/train/4')
  expected = class_index_lib.load_class_index(source, progress=False)
  path = class_index_lib.cache_path(source)
  assert os.stat(path).st_mode & 0o777 == 0o644
  if damage == 'truncated':
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
  elif damage == 'key-missing':
    np.savez(open(path, 'wb'), presence=expected.presence)
  else:
    open(path, 'wb').write(damage)
  index = class_index_lib.load_class_index(source, progress=False)
  np.testing.assert_array_equal(index.presence, expected.presence)
  np.testing.assert_array_equal(index.pixel_counts, expected.pixel_counts)
  assert 'rebuilding' in caplog.text and 'allow_pickle' not in caplog.text
  class_index_lib.load_class_index(source, progress=False)  # now from the rebuilt cache


# 8. Records are strict JSON: no NaN.
def test_records_are_strict_json(tmp_path):
  record = evaluation.summarize(np.zeros((3, 3), np.int64), ['a', 'b', 'c'], step=1)
  records.write_json(str(tmp_path / 'r.json'), record)
  text = (tmp_path / 'r.json').read_text()

  def reject(constant):
    raise ValueError(constant)

  parsed = json.loads(text, parse_constant=reject)
  assert parsed['miou'] is None and parsed['pixel_accuracy'] is None


# 9. Early and clear errors: a half-prepared dataset, a workdir too long for checkpoints.
def test_half_prepared_synthetic_dataset_is_generated_again(make_tiny_config, tmp_path, caplog):
  config = make_tiny_config({'dataset.data_dir': str(tmp_path / 'tfds')})
  first = datasets.load_source(config, 'train')
  info = glob.glob(str(tmp_path / 'tfds' / '**' / 'dataset_info.json'), recursive=True)
  assert len(info) == 1
  os.remove(info[0])
  again = datasets.load_source(config, 'train')
  assert len(again) == len(first) and 'generating it again' in caplog.text
  np.testing.assert_array_equal(again[0]['label'], first[0]['label'])


def test_half_prepared_real_dataset_says_how_to_prepare(make_tiny_config, tmp_path):
  config = make_tiny_config({'dataset.name': 'ade20k', 'dataset.data_dir': str(tmp_path)})
  builder = datasets.DATASETS['ade20k'].make_builder(config)
  os.makedirs(builder.data_dir)  # a folder without its dataset_info.json
  with pytest.raises(FileNotFoundError, match='incompletely prepared.*tce_jax.prepare'):
    datasets.load_source(config, 'train')


def test_workdir_too_long_for_a_checkpoint_fails_at_start(make_tiny_config, tmp_path):
  deep = tmp_path / '/'.join(['d' * 199] * 20)  # ~4,050 characters: makedirs still works
  with pytest.raises(workdir_lib.WorkdirError, match='shorter --workdir'):
    train.train_and_evaluate(make_tiny_config(), str(deep))


# 2. One process per workdir; a killed holder's lock is free at once.
def test_lock_of_a_live_holder_refuses_and_of_a_killed_one_is_free(make_tiny_config, tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  lock = workdir / workdir_lib.LOCK
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\nfrom tce_jax import workdir\n'
       'with workdir.lock(sys.argv[1]):\n  print("held", flush=True)\n  time.sleep(120)',
       str(workdir)], cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    start = time.time()
    with pytest.raises(workdir_lib.WorkdirError, match=f'in use by process {holder.pid}'):
      train.train_and_evaluate(make_tiny_config({'train.num_steps': 2}), str(workdir))
    assert time.time() - start < 60 and lock.exists()
  finally:
    holder.kill()  # SIGKILL: no clean-up; the lock file stays, its OS lock dies
    holder.wait()
  assert lock.exists()
  train.train_and_evaluate(make_tiny_config({'train.num_steps': 2}), str(workdir))
  assert not lock.exists()  # released at the end


_LOCK_RACER = """
import os, sys, time
from tce_jax import records, workdir
folder, go, trials, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
open(go + '.ready.' + str(os.getpid()), 'w').close()
while not os.path.exists(go):
  time.sleep(0.005)
start = records.read_json(go)['start']
for trial in range(trials):
  time.sleep(max(0.0, start + 0.4 * trial - time.time()))
  try:
    with workdir.lock(folder):
      entered = time.time()
      time.sleep(0.1)
      with open(log, 'a') as f:
        f.write(f'{trial} {os.getpid()} {entered} {time.time()}\\n')
  except workdir.WorkdirError:
    pass
"""


def test_lock_race_never_has_two_holders(tmp_path):
  """Six processes take the lock at one instant, ten times over: never two holders at once
  (the file-based lock this replaced let two in, in most trials)."""
  folder, go, log = tmp_path / 'run', tmp_path / 'go', tmp_path / 'holders.log'
  folder.mkdir()
  racers = [subprocess.Popen([sys.executable, '-c', _LOCK_RACER, str(folder), str(go), '10',
                              str(log)], cwd=ROOT, env=subprocess_env()) for _ in range(6)]
  deadline = time.time() + 120
  while len(glob.glob(f'{go}.ready.*')) < len(racers):
    assert time.time() < deadline and all(r.poll() is None for r in racers)
    time.sleep(0.05)
  records.write_json(str(go), {'start': time.time() + 0.5})  # atomic: never seen half-written
  assert all(r.wait(timeout=120) == 0 for r in racers)
  held = sorted((float(entered), float(left), trial) for trial, _, entered, left in
                (line.split() for line in log.read_text().splitlines()))
  assert {trial for _, _, trial in held} == {str(t) for t in range(10)}  # someone each time
  for (_, left, _), (entered, _, _) in zip(held, held[1:]):
    assert entered >= left, 'two processes held the workdir lock at once'
  assert not (folder / workdir_lib.LOCK).exists()


# 2b. A workdir whose checkpoints were all damaged stays its run's workdir.
def test_all_checkpoints_damaged_then_two_reruns(finished_run, tmp_path):
  config, original = finished_run
  workdir = _copy_run(original, tmp_path)
  for data in glob.glob(str(workdir / 'checkpoints' / '*' / 'default' / 'ocdbt.process_0' /
                            'd' / '*')):
    os.remove(data)
  kept = {name: (workdir / name).read_bytes()
          for name in ('config.json', 'config_history/0.json', 'eval/4.json')}
  with pytest.raises(ValueError, match=r'No checkpoint in .* could be restored: the damaged '
                                       r'ones were moved to .*corrupt-4-.*--restart_from_scratch'):
    train.train_and_evaluate(config.copy_and_resolve_references(), str(workdir))
  other = config.copy_and_resolve_references()
  other.seed, other.tce.t = 7, 5.0
  with pytest.raises(workdir_lib.WorkdirError, match=r'config\.seed: .* -> 7'):
    train.train_and_evaluate(other, str(workdir))  # refused before the checkpoints are read
  assert {name: (workdir / name).read_bytes() for name in kept} == kept
  assert not os.path.exists(workdir / '.lock')
  record = train.train_and_evaluate(config.copy_and_resolve_references(), str(workdir),
                                    restart_from_scratch=True)
  assert record['step'] == 4
  previous, = glob.glob(str(workdir / 'previous-*'))
  assert open(os.path.join(previous, 'eval', '4.json'), 'rb').read() == kept['eval/4.json']
  assert len(glob.glob(os.path.join(previous, 'checkpoints', 'corrupt-*'))) == 2
  assert not glob.glob(str(workdir / 'checkpoints' / 'corrupt-*'))


def test_rerun_before_the_first_checkpoint_refuses_another_config(finished_run, tmp_path):
  """A run that died before its first checkpoint keeps its config: a rerun with another seed
  is refused like a resume (it used to overwrite config_history/0.json)."""
  config, original = finished_run
  workdir = _copy_run(original, tmp_path)
  shutil.rmtree(workdir / 'checkpoints')
  shutil.rmtree(workdir / 'eval')
  saved = (workdir / 'config_history' / '0.json').read_text()
  other = config.copy_and_resolve_references()
  other.seed = 7
  with pytest.raises(workdir_lib.WorkdirError, match=rf'config\.seed: {config.seed!r} -> 7'):
    train.train_and_evaluate(other, str(workdir))
  assert (workdir / 'config_history' / '0.json').read_text() == saved
  train.train_and_evaluate(config.copy_and_resolve_references(), str(workdir))  # same config
  assert_no_duplicate_tensorboard_points(workdir)  # the dead attempt's events were dropped


# 3 (+2, 4, 10 across processes). SIGTERM: save, exit 143, resume bit-identically.
def test_sigterm_saves_and_resumes_bit_identically(tmp_path, straight_run):
  env = subprocess_env()
  straight_dir, data_dir = straight_run
  run = tmp_path / 'stopped'
  log = open(tmp_path / 'stopped.log', 'w')
  process = subprocess.Popen(kill_test_command(run, data_dir), cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while not (run / 'checkpoints' / '8').exists():
    assert process.poll() is None and time.time() < deadline, 'run ended before the signal'
    time.sleep(0.01)
  # A second process on the live workdir fails at once, naming the holder (the first one is
  # paused meanwhile, so that it is still mid-run for the SIGTERM that follows).
  process.send_signal(signal.SIGSTOP)
  second = subprocess.run(kill_test_command(run, data_dir), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
  process.send_signal(signal.SIGCONT)
  assert second.returncode != 0 and f'in use by process {process.pid}' in second.stderr
  assert 'Traceback' not in second.stderr
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 128 + signal.SIGTERM
  log.close()
  output = (tmp_path / 'stopped.log').read_text()
  saved = [int(p) for p in os.listdir(run / 'checkpoints') if p.isdigit()]
  assert f'Saved the checkpoint of step {max(saved)}' in output and max(saved) < 40
  assert not (run / workdir_lib.LOCK).exists()

  drifted = subprocess.run(kill_test_command(run, data_dir) + ['--config.seed=3'], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300, check=False)
  assert drifted.returncode != 0 and 'config.seed: 0 -> 3' in drifted.stderr
  assert len(drifted.stderr.strip().splitlines()) == 1, drifted.stderr[-2000:]  # said at once

  resumed = subprocess.run(kill_test_command(run, data_dir), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600, check=False)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'Resumed from the checkpoint of step {max(saved)}' in resumed.stderr
  # Reading a checkpoint's shapes looks for no step metadata inside its item folder.
  assert 'Metadata file does not exist' not in resumed.stderr
  (step_a, a), (step_b, b) = final_params(straight_dir), final_params(run)
  assert step_a == step_b == 40
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  assert_no_duplicate_tensorboard_points(run)


def test_stop_signal_reads_how_a_process_stopped():
  """A process that caught SIGTERM and stopped exits 143 (`SignalStop.exit_code`); one the
  signal killed before it could catch it reads as minus the signal in multiprocessing."""
  context = multiprocessing.get_context('spawn')
  killed = context.Process(target=time.sleep, args=(60,))
  killed.start()
  killed.terminate()
  killed.join(timeout=60)
  stopped = preemption.Interrupted(signal.SIGTERM, 8, 'run')
  caught = subprocess.run([sys.executable, '-c', f'raise SystemExit({stopped.exit_code})'],
                          check=False)
  assert stopped.exit_code == caught.returncode == 143
  assert preemption.stop_signal(killed.exitcode) == signal.SIGTERM
  assert preemption.stop_signal(caught.returncode) == signal.SIGTERM
  assert preemption.stop_signal(128 + signal.SIGINT) == signal.SIGINT
  for other in (None, 0, 1, -signal.SIGKILL, 128 + signal.SIGKILL):
    assert preemption.stop_signal(other) is None, other


def assert_no_duplicate_tensorboard_points(workdir):
  """10. After a resume, each (tag, step) appears once in the run's TensorBoard events."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.proto import event_pb2  # pylint: disable=g-import-not-at-top
  seen = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      event = event_pb2.Event.FromString(raw)
      for value in event.summary.value:
        key = (value.tag, event.step)
        seen[key] = seen.get(key, 0) + 1
  assert seen and max(seen.values()) == 1, [k for k, v in seen.items() if v > 1][:5]


_GENERATE = """
import sys
from tce_jax.configs import tiny
from tce_jax.data import datasets
config = tiny.get_config()
config.dataset.data_dir = sys.argv[1]
print(len(datasets.load_source(config, 'train')), len(datasets.load_source(config, 'validation')))
"""


def test_concurrent_generation_into_one_new_data_dir(tmp_path):
  """Two runs that both need the synthetic dataset in one new data_dir: one generates it,
  the other waits and reuses it (it used to fail renaming tfds' incomplete folder)."""
  processes = [subprocess.Popen([sys.executable, '-c', _GENERATE, str(tmp_path / 'tfds')],
                                cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for p, (out, err) in zip(processes, outputs):
    assert p.returncode == 0, err[-3000:]
    assert out.split() == ['48', '8']


def test_damaged_json_records_are_named(finished_run, tmp_path):
  from tce_jax import report  # pylint: disable=g-import-not-at-top
  _, original = finished_run
  workdir = _copy_run(original, tmp_path)
  (workdir / 'eval' / '4.json').write_text('{"step": 4, "miou": "trunc')
  with pytest.raises(ValueError, match=rf'{workdir}/eval/4.json is not valid JSON'):
    report.latest_eval(str(workdir))
  (workdir / 'config.json').write_text('{\n garbage')
  with pytest.raises(ValueError, match=rf'{workdir}/config.json is not valid JSON'):
    workdir_lib.load_run_config(str(workdir))


def test_report_out_under_a_file_is_one_line(finished_run, tmp_path):
  _, original = finished_run
  (tmp_path / 'file').write_text('')
  result = subprocess.run([sys.executable, '-m', 'tce_jax.report', '--runs', str(original),
                           '--out', str(tmp_path / 'file' / 'report')], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      f'Error: --out {tmp_path}/file/report cannot be created: Not a directory (a file in '
      'the way?)'], result.stderr[-2000:]


def test_refused_long_workdir_leaves_nothing_behind(make_tiny_config, tmp_path):
  deep = tmp_path / '/'.join(['d' * 199] * 20)
  with pytest.raises(workdir_lib.WorkdirError, match='shorter --workdir'):
    train.train_and_evaluate(make_tiny_config(), str(deep))
  assert not (tmp_path / ('d' * 199)).exists()
