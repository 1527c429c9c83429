"""The paper's experiments as a plan of commands, and a rehearsal of the whole plan on CPU.

  python scripts/reproduce.py                # print the commands (docs/reproduce.md)
  python scripts/reproduce.py --run          # run them, in order (a re-run resumes)
  python scripts/reproduce.py --dry_run      # rehearse every one of them on fake data, on CPU

The plan (`plan()`) is, for each dataset of the paper: prepare the downloaded archives,
convert torchvision's ImageNet ResNet-101, train MCCE, Focal, TCE t = 0.1 and TCE t = 1 for
each seed (the paper's configs, ImageNet weights required), evaluate each run's final
checkpoint under the paper's protocol (the config's: whole images, single scale; ADE20k scored
at the original resolution), and write the report against MCCE with the paper's fairness
fraction (0.25 Cityscapes, 0.15 ADE20k; from the config).

`--dry_run` runs the very same commands, as subprocesses, with four changes: archives in the
official layout with tiny synthetic content (tce_jax.data.fake_archives), a randomly initialised
ResNet-101 (`--dry_run_backbone`) written in torchvision's layout instead of the ImageNet download (it goes through
scripts/convert_resnet.py like the real file), one seed, and the tiny sizes of
`dry_run_overrides` (2 steps, 64 x 64 crops, narrow layers) appended to every training command.
It ends with the reports; a failure stops it with the command that failed and its output.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_list('datasets', ['cityscapes', 'ade20k'], 'Datasets of the paper to include.')
flags.DEFINE_integer('seeds', 3, 'Seeds per method (runs differ only in config.seed).')
flags.DEFINE_string('out', None, 'Root of the runs and reports (default: runs/paper; with '
                    '--dry_run: runs/reproduce_dry_run).')
flags.DEFINE_string('data_dir', None, 'tfds data_dir of the prepared datasets (default: '
                    'tfds\'s, ~/tensorflow_datasets).')
flags.DEFINE_string('cityscapes_dir', '$CITYSCAPES_DIR', 'Folder with Cityscapes\' '
                    'leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip.')
flags.DEFINE_string('ade20k_dir', '$ADE20K_DIR', 'Folder with ADEChallengeData2016.zip.')
flags.DEFINE_string('imagenet_weights', 'resnet101.safetensors', 'torchvision\'s (or '
                    'timm\'s) ImageNet ResNet-101 state dict (.safetensors or .pth).')
flags.DEFINE_string('weights', 'weights/resnet101_imagenet', 'Where the converted backbone '
                    'goes (config.model.pretrained).')
flags.DEFINE_bool('run', False, 'Run the commands in order instead of printing them.')
flags.DEFINE_bool('dry_run', False, 'Rehearse the whole plan on fake data, on CPU.')
flags.DEFINE_integer('dry_run_width', 16, 'Stem width of the dry run\'s ResNet (64 = the real '
                     'one; narrower runs faster, same layers).')
flags.DEFINE_enum('dry_run_backbone', 'resnet101', ['resnet18', 'resnet50', 'resnet101'],
                  'Backbone of the dry run: the paper\'s ResNet-101 by default; the test suite '
                  'rehearses on resnet18, which compiles ~4x faster (ResNet-101 itself is '
                  'tested at full size in tests/test_models.py).')

# (label, config suffix, overrides): the paper's four methods.
METHODS = (('mcce', 'mcce', {}), ('focal', 'focal', {}),
           ('tce_t0.1', 'tce', {'tce.t': 0.1}), ('tce_t1', 'tce', {'tce.t': 1.0}))
ARCHIVES = {'cityscapes': 'cityscapes_dir', 'ade20k': 'ade20k_dir'}


@dataclasses.dataclass(frozen=True)
class Step:
  """One command of the plan: what it does (for the log) and its argv (run from ROOT)."""
  what: str
  argv: tuple[str, ...]

  def shell(self) -> str:
    # "$CITYSCAPES_DIR"-style placeholders stay expandable by the user's shell.
    return ' '.join(f'"{a}"' if '$' in a else shlex.quote(a) for a in self.argv)


def python(*args: str) -> tuple[str, ...]:
  return ('python', *args)


def run_dir(out: str, dataset: str, label: str, seed: int) -> str:
  return os.path.join(out, dataset, f'{label}_s{seed}')


def plan(*, datasets: list[str], seeds: int, out: str, data_dir: str | None,
         archives: dict[str, str], imagenet_weights: str, weights: str, width: int = 64,
         backbone: str = 'resnet101', train_overrides: dict[str, dict] | None = None) -> list[Step]:
  """The commands that reproduce the paper's tables for `datasets`, in order.

  `train_overrides` maps a dataset to extra `--config.` values of its training commands (the
  dry run's tiny sizes); `backbone` and `width` are those of the weights file (the paper's:
  ResNet-101, 64).
  """
  data = [f'--data_dir={data_dir}'] if data_dir else []
  steps = [Step(f'convert the ImageNet {backbone} to a backbone checkpoint',
                python('scripts/convert_resnet.py', f'--input={imagenet_weights}',
                       f'--depth={backbone}', *([f'--width={width}'] if width != 64 else []),
                       f'--output={weights}'))]
  for dataset in datasets:
    steps.append(Step(f'prepare {dataset}', python(
        '-m', 'tce_jax.prepare', f'--dataset={dataset}', f'--manual_dir={archives[dataset]}',
        *data)))
    runs, labels = [], []
    extra = {'dataset.data_dir': data_dir} if data_dir else {}
    extra.update((train_overrides or {}).get(dataset, {}))
    for label, suffix, overrides in METHODS:
      for seed in range(seeds):
        workdir = run_dir(out, dataset, label, seed)
        values = {'seed': seed, 'model.pretrained': weights, **overrides, **extra}
        steps.append(Step(f'train {dataset} {label} seed {seed}', python(
            '-m', 'tce_jax.main', f'--config=configs/{dataset}_{suffix}.py',
            f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in values.items()))))
        steps.append(Step(f'evaluate {dataset} {label} seed {seed} (the paper\'s protocol)',
                          python('-m', 'tce_jax.evaluate', f'--workdir={workdir}', *data)))
        runs.append(workdir)
        labels.append(label)
    steps.append(Step(f'report {dataset} against MCCE', python(
        '-m', 'tce_jax.report', '--runs', *runs, f'--labels={",".join(labels)}',
        f'--reference={runs[0]}', f'--out={os.path.join(out, dataset, "report")}')))
  return steps


def dry_run_overrides(dataset: str, width: int, backbone: str = 'resnet101') -> dict:
  """Tiny sizes for the rehearsal: 2 steps of 2 images at 64 x 64 on a narrow ResNet."""
  values = {'model.backbone': backbone,
      'train.num_steps': 2, 'train.log_every': 1, 'train.eval_every': 2,
      'train.checkpoint_every': 2, 'train.batch_size': 2, 'input.eval_batch_size': 2,
      'input.num_threads': 1, 'input.crop_size': (64, 64), 'model.width': width,
      'model.aspp_channels': 16, 'model.decoder_channels': 16,
      'model.upernet_channels': 16, 'model.aux_channels': 8}
  if dataset == 'ade20k':  # the recipe's resize target, scaled to the fake images
    values.update({'input.base_size': (256, 64), 'input.eval_size': (256, 64)})
  return values


def prepare_dry_run(out: str, datasets: list[str], width: int, backbone: str) -> dict:
  """Fake archives and a random torchvision-layout ResNet under `out`; the plan's inputs."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from tce_jax.data import fake_archives  # pylint: disable=g-import-not-at-top
  from tce_jax.models import pretrained  # pylint: disable=g-import-not-at-top
  archives = {}
  for dataset in datasets:
    folder = os.path.join(out, 'archives', dataset)
    os.makedirs(folder, exist_ok=True)
    if dataset == 'cityscapes':  # Cityscapes at 1/8 scale
      fake_archives.make_cityscapes_archives(folder, size=(128, 256))
    else:
      fake_archives.make_ade20k_archive(folder)
    archives[dataset] = folder
  torch_file = os.path.join(out, 'weights', f'{backbone}_torchvision_random.safetensors')
  os.makedirs(os.path.dirname(torch_file), exist_ok=True)
  save_file(pretrained.state_dict_from_variables(pretrained.random_backbone(backbone, width)),
            torch_file)
  return {'archives': archives, 'imagenet_weights': torch_file,
          'weights': os.path.join(out, 'weights', f'{backbone}_random'),
          'data_dir': os.path.join(out, 'tfds')}


def execute(steps: list[Step], env: dict[str, str] | None = None) -> None:
  """Runs the steps in order from ROOT with this interpreter; stops at the first failure."""
  for i, step in enumerate(steps, 1):
    start = time.perf_counter()
    print(f'[{i}/{len(steps)}] {step.what}', flush=True)
    argv = [sys.executable if a == 'python' else a for a in step.argv]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode:
      raise SystemExit(f'Error: step {i} ({step.what}) failed with exit code '
                       f'{result.returncode}:\n  {step.shell()}\n{result.stderr[-4000:]}')
    print(f'    done in {time.perf_counter() - start:.0f} s', flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = set(FLAGS.datasets) - set(ARCHIVES)
  if unknown:
    raise app.UsageError(f'--datasets: unknown {sorted(unknown)}; choose from {list(ARCHIVES)}')
  if FLAGS.dry_run:
    out = os.path.abspath(FLAGS.out or os.path.join(ROOT, 'runs', 'reproduce_dry_run'))
    width, backbone = FLAGS.dry_run_width, FLAGS.dry_run_backbone
    inputs = prepare_dry_run(out, FLAGS.datasets, width, backbone)
    steps = plan(datasets=FLAGS.datasets, seeds=1, out=os.path.join(out, 'runs'),
                 data_dir=inputs['data_dir'], archives=inputs['archives'],
                 imagenet_weights=inputs['imagenet_weights'], weights=inputs['weights'],
                 width=width, backbone=backbone,
                 train_overrides={d: dry_run_overrides(d, width, backbone)
                                  for d in FLAGS.datasets})
    env = dict(os.environ)
    # Each step is a new process that compiles what an earlier one already did (the runs of a
    # dataset share their model): a compilation cache for the rehearsal, unless one is set.
    env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(out, 'xla_cache'))
    env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    start = time.perf_counter()
    execute(steps, env)
    reports = [os.path.join(out, 'runs', d, 'report', 'report.md') for d in FLAGS.datasets]
    print(f'Dry run passed in {time.perf_counter() - start:.0f} s: every paper config '
          'trained, evaluated and reported on fake data. Reports: ' + ', '.join(reports))
    return
  steps = plan(datasets=FLAGS.datasets, seeds=FLAGS.seeds,
               out=FLAGS.out or os.path.join('runs', 'paper'), data_dir=FLAGS.data_dir,
               archives={d: getattr(FLAGS, ARCHIVES[d]) for d in FLAGS.datasets},
               imagenet_weights=FLAGS.imagenet_weights, weights=FLAGS.weights)
  if FLAGS.run:
    execute(steps)
    return
  for step in steps:
    print(f'# {step.what}\n{step.shell()}')


if __name__ == '__main__':
  app.run(main)
