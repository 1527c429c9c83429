"""The command users run, end to end, in a subprocess; and the shipped configs."""

import glob
import importlib
import json
import os
import subprocess
import sys

import pytest

from tce_jax import config_validation
from tce_jax.configs import tiny

from conftest import main_command, ROOT, subprocess_env

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
                 if not p.endswith('__init__.py'))


def run_main(*args, timeout=600):
  return subprocess.run([sys.executable, '-m', 'tce_jax.main', *args], cwd=ROOT,
                        env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
                        check=False)


@pytest.mark.slow
def test_main_trains_tce_end_to_end(tmp_path):
  workdir = tmp_path / 'run'
  result = subprocess.run(
      main_command('configs/synthetic_tce.py', workdir, tmp_path / 'tfds', '--config.tce.t=1.0',
                   '--config.train.num_steps=8', '--config.train.log_every=4',
                   '--config.train.eval_every=8', '--config.train.checkpoint_every=4'),
      cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(workdir / 'eval' / '8.json') as f:
    record = json.load(f)
  assert record['step'] == 8 and 0 <= record['miou'] <= 100
  assert list(record['per_class_iou'])[:3] == ['road', 'sidewalk', 'building']
  assert os.listdir(workdir / 'checkpoints')
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=all
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={'tensors': 0})
  events.Reload()
  tags = set(events.Tags()['tensors'])
  assert {'loss/train', 'loss/train_mcce', 'loss/eval', 'eval/miou', 'eval/worst',
          'eval/percentile_bottom_miou', 'eval/gini', 'eval/cvar', 'per_class_iou/road',
          'sampling/probability/train', 'sampling/draw_count/rider', 'train/grad_norm',
          'eval/predictions', 'eval/per_class_iou'} <= tags, sorted(tags)[:20]
  assert not any('sorted_' in t for t in tags)  # a reference's statistic: reports only
  # Time Series opens the first two groups (first path segments, sorted): the headline ones.
  shown = set(events.PluginTagToContent('scalars')) | set(events.PluginTagToContent('images'))
  assert sorted({t.split('/')[0] for t in shown})[:2] == ['eval', 'loss']
  preview = events.Tensors('eval/predictions')[-1].tensor_proto.string_val  # width, height, PNG
  h, w = tiny.OVERRIDES['dataset.synthetic.height'], tiny.OVERRIDES['dataset.synthetic.width']
  # 3 x 3 panels, under a header of column titles and above a legend of the classes shown.
  assert int(preview[0]) == 3 * w + 2 * 4 and int(preview[1]) > 16 + 3 * h + 2 * 4
  assert preview[2].startswith(b'\x89PNG')
  assert 'custom_scalars__config__' in events.PluginTagToContent('custom_scalars')
  steps = [e.step for e in events.Tensors('sampling/probability/sky')]
  assert steps == [4, 8]
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import tensor_util  # pylint: disable=g-import-not-at-top
  probs = np.array([float(tensor_util.MakeNdarray(events.Tensors(tag)[-1].tensor_proto))
                    for tag in sorted(tags) if tag.startswith('sampling/probability/')])
  assert len(probs) == 19 and abs(probs.sum() - 1) < 1e-4
  assert probs.std() > 1e-4, 'with t = 1 the sampling weights move away from uniform'


@pytest.mark.parametrize('module, args, message', [
    ('main', ['--config=configs/synthetic_mcce.py', '--workdir={tmp}/run',
              '--config.loss.name=dice'], "Error: config.loss.name='dice': must be one of"),
    ('main', ['--config=configs/tiny.py', '--workdir={tmp}/a_file'],
     'Error: The workdir {tmp}/a_file cannot be created: {tmp}/a_file is a file'),
    ('evaluate', ['--workdir={tmp}/none'], "is not a training run directory"),
    ('report', ['--runs', '{tmp}/none', '--out', '{tmp}/report'],
     "is not a training run directory")])
def test_user_errors_are_one_line(module, args, message, tmp_path):
  """Each mistake of a user prints one line (no log line before it, no traceback) and exits
  with 1; the refused resume is tested in test_run_safety."""
  (tmp_path / 'a_file').write_text('')
  result = subprocess.run(
      [sys.executable, '-m', f'tce_jax.{module}', *[a.format(tmp=tmp_path) for a in args]],
      cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and message.format(tmp=tmp_path) in lines[0], result.stderr[-2000:]


@pytest.mark.parametrize('name', CONFIGS)
def test_shipped_configs_load_and_validate(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  if name == 'default':
    return
  assert config.name == name
  if config.model.require_pretrained:  # the real configs: ImageNet weights or an explicit 'none'
    config.model.pretrained = 'none'
  config_validation.validate_config(config, num_devices=1)


@pytest.mark.parametrize('args,message', [
    (['--config=configs/synthetic_mcce.py', '--workdir=/tmp/x', '--no_such_flag=1'],
     'Unknown command line flag'),
    (['--config=configs/synthetic_mcce.py'], '--workdir'),
])
def test_cli_rejects_unknown_flags_and_missing_workdir(args, message):
  result = run_main(*args, timeout=120)
  assert result.returncode != 0
  assert message in result.stderr


def test_command_line_mistakes_are_one_line_with_exit_code_2():
  result = run_main('--config=configs/tiny.py', '--workdir=/nonexistent/run',
                    '--config.tce.tt=1')
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert lines == ['Error: --config.tce.tt: configs/tiny.py has no field tce.tt '
                   '(did you mean: tce.t?)'], result.stderr[-2000:]
  result = run_main('--config=configs/tiny.py', '--workdir=/nonexistent/run',
                    '--config.train.num_steps=many')
  assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
  assert "--config.train.num_steps=many" in result.stderr


def test_help_lists_the_configs_and_print_config_shows_the_overrides():
  result = run_main('--help')
  assert result.returncode == 0
  assert 'cityscapes_tce' in result.stdout and 'synthetic_mcce' in result.stdout
  result = run_main('--config=configs/tiny.py', '--print_config', '--config.tce.t=3')
  assert result.returncode == 0, result.stderr[-2000:]
  assert 't: 3.0' in result.stdout and 'backbone: resnet18' in result.stdout


def test_unknown_field_suggestions():
  from tce_jax import cli  # pylint: disable=g-import-not-at-top
  argv = ['main', '--config=configs/synthetic_tce.py', '--config.train.num_stepz=3']
  message = cli.unknown_field_message(argv)
  assert message.startswith('--config.train.num_stepz: configs/synthetic_tce.py has no field')
  assert 'train.num_steps' in message
  assert cli.unknown_field_message(['main', '--config=configs/synthetic_tce.py',
                                    '--config.tce.t=2']) is None
  assert 'tiny' in cli.available_configs() and 'default' in cli.available_configs()


BAD_CONFIG_FILES = {
    'syntax': ('def get_config(:\n', r'syntax error at line 1'),
    'raises': ('from tce_jax.configs import default\n\ndef get_config():\n'
               '  config = default.get_config()\n  return config.no_section.x\n',
               r'get_config\(\) raised AttributeError: .*no_section.* \(line 5\)'),
    'no_get_config': ('CONFIG = 1\n', r'defines no get_config\(\)'),
    'top_level_raises': ('raise RuntimeError("broken")\n',
                         r'fails when loaded: RuntimeError: broken'),
    'typo': ('from tce_jax.configs import default\n\ndef get_config():\n'
             '  config = default.get_config()\n  config.train.num_stepz = 10\n  return config\n',
             r'sets config\.train\.num_stepz, which configs/default.py does not have '
             r"\(did you mean: train\.num_steps.*\?\); to add a field on purpose, list it in the "
             r"file's NEW_FIELDS = \('train\.num_stepz',\)"),
}


@pytest.mark.parametrize('problem', sorted(BAD_CONFIG_FILES))
def test_config_file_problems_are_one_line_naming_the_file(problem, tmp_path):
  from tce_jax import cli  # pylint: disable=g-import-not-at-top
  text, message = BAD_CONFIG_FILES[problem]
  path = tmp_path / f'{problem}.py'
  path.write_text(text)
  with pytest.raises(ValueError, match=rf'^--config={path}.*{message}') as error:
    cli.load_config_file(str(path))
  assert '\n' not in str(error.value)


def test_new_fields_declared_in_a_config_file_are_accepted(tmp_path):
  from tce_jax import cli  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'extended.py'
  path.write_text("from tce_jax.configs import default\n\nNEW_FIELDS = ('train.my_field',)\n\n"
                  'def get_config():\n  config = default.get_config()\n'
                  '  config.train.my_field = 3\n  return config\n')
  config, _ = cli.load_config_file(str(path))
  assert config.train.my_field == 3


def test_missing_config_file_is_one_line_naming_the_closest(tmp_path):
  result = run_main('--config=configs/synthetic_tcee.py', f'--workdir={tmp_path}/run',
                    '--config.tce.t=1', timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'Error: --config=configs/synthetic_tcee.py: no such file (did you mean '
      'configs/synthetic_tce.py?)'], result.stderr[-2000:]
  assert not (tmp_path / 'run').exists()
