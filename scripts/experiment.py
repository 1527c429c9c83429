"""The fairness experiment on the synthetic dataset: every method x seeds, then the report.

  python scripts/experiment.py --out=runs/experiment [--seeds=3] [--sweep_seeds=3] [--steps=N]
                               [--quick] [--methods=mcce,tce_t1,...] [--records=docs/results/runs]
                               [--notrain] [--report_dir=docs/results]

Methods (identical model, data, steps and schedule; `METHODS` below, docs/method.md): the
paper's (MCCE, Focal with alpha = inverse pixel frequency, Stochastic TCE with t = 0.1 and
t = 1, the direct image- and class-level tilted losses at t = 1), the t = 0 ablation
(class-uniform sampling), and the added ones: Stochastic TCE with the class signal, with
class-aware crops, with TERM's class-size prior; rare class sampling (DAFormer); Focal
without alpha, CE with sqrt-inverse-frequency weights, OHEM and the Recall loss; and the t
sweep (`SWEEP`, `--sweep_seeds` seeds each). Runs go seed by seed (every method's seed 0
first). Each run lives in OUT/<method>_s<seed>; finished runs are skipped and interrupted
ones resume from their checkpoints, so the command can be started again after any
interruption. With `--records`, each finished run's config.json and eval/*.json (a few KB)
are copied to RECORDS/<method>_s<seed>/ as it finishes, and a run found there counts as
finished (its recorded config must train what this version would), so a study committed run
by run resumes on any machine, and its report rebuilds from the records alone. Every run
trains the benchmark of configs/synthetic_mcce.py (docs/synthetic_dataset.md) for its
train.num_steps unless `--steps` says otherwise. At the end it writes the report (MCCE as
the reference) into `--report_dir` (default OUT/report; with `--notrain` only the finished or
recorded runs are reported, nothing is trained): the report of tce_jax.report with its Pareto
figure, and summary.md: per family (the 5-seed methods, the t sweep) each method's headline
statistics (mean +- std over seeds) with the difference to MCCE and its 95% confidence
interval, Welch's test with Holm's correction over the family's table, and the classes better
/ worse than MCCE after Holm over the classes; then the ablations (`ABLATIONS`: pairs of
methods that differ in the signal, the tilt, the size prior or the crop alone), each pair's
difference with the same statistics and Holm over each ablation family; and sweep.png, the
headline statistics against t (`SWEEP_SERIES`). `--quick` is a smoke
version (tiny model and data, 1 seed, a few steps) for the tests.
"""

import os

from absl import app
from absl import flags
import jax
import numpy as np
import tqdm

from tce_jax import evaluate
from tce_jax import records as records_lib
from tce_jax import report
from tce_jax import rundir
from tce_jax import stats
from tce_jax import train
from tce_jax import workdir as workdir_lib
from tce_jax.data import datasets
from tce_jax.configs import synthetic_mcce
from tce_jax.configs import synthetic_rcs
from tce_jax.configs import tiny

FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a script (the tests import this module)."""
  flags.DEFINE_string('out', 'runs/experiment', 'Folder of the runs and the report.')
  flags.DEFINE_integer('seeds', 3, 'Seeds per method.')
  flags.DEFINE_integer('steps', None, 'Training steps of every run (default: the benchmark '
                       "config's train.num_steps).")
  flags.DEFINE_bool('quick', False, 'Smoke version: tiny model and data, 1 seed, 4 steps.')
  flags.DEFINE_string('data_dir', None, 'tfds data_dir (default: ~/tensorflow_datasets).')
  flags.DEFINE_string('records', None, 'Folder of committed run records, e.g. '
                      'docs/results/runs: runs recorded there are not trained again, and each '
                      'run finished here is recorded there.')
  flags.DEFINE_bool('train', True, 'Train the runs not finished yet; with --notrain, report '
                    'on the finished (or recorded) runs only.')
  flags.DEFINE_string('report_dir', None, 'Folder of the report (default: OUT/report), e.g. '
                      'docs/results.')
  flags.DEFINE_integer('sweep_seeds', 3, 'Seeds of each t-sweep method (SWEEP), at most '
                       '--seeds.')
  flags.DEFINE_list('methods', None, 'Methods to run (names of METHODS or SWEEP; default: '
                    'all). The first is the reference of the report.')

# DAFormer's parameters scaled to the synthetic images, as configs/synthetic_rcs.py sets them:
# class-aware crops (10 redraws, 94 pixels of the class in the 128 x 128 crop) and D_c
# restricted to the images with more than 750 pixels of c (0.57% of a 256 x 512 image).
_RCS_CONFIG = synthetic_rcs.get_config()
CLASS_CROP = {f'sampling.class_crop.{field}': _RCS_CONFIG.sampling.class_crop[field]
              for field in ('retries', 'min_pixels')}
RCS = {'sampling.name': 'rcs', 'sampling.rcs_temperature': _RCS_CONFIG.sampling.rcs_temperature,
       'sampling.min_pixels': _RCS_CONFIG.sampling.min_pixels, **CLASS_CROP}

# method -> config overrides on top of configs/synthetic_mcce.py. The paper's methods first.
METHODS = {
    'mcce': {},
    'focal': {'loss.name': 'focal'},
    'uniform': {'sampling.name': 'tce', 'tce.t': 0.0},
    'tce_t0.1': {'sampling.name': 'tce', 'tce.t': 0.1},
    'tce_t1': {'sampling.name': 'tce', 'tce.t': 1.0},
    'tce_image_t1': {'loss.name': 'tce_image', 'tce.t': 1.0},
    'tce_class_t1': {'loss.name': 'tce_class', 'tce.t': 1.0},
    # Stochastic TCE extended (docs/method.md): the class signal, class-aware crops, both,
    # and TERM's class-size prior; the crops alone with class-uniform draws.
    'tce_signal_class_t1': {'sampling.name': 'tce', 'tce.t': 1.0, 'tce.signal': 'class'},
    'tce_crop_t1': {'sampling.name': 'tce', 'tce.t': 1.0, **CLASS_CROP},
    'tce_signal_class_crop_t1': {'sampling.name': 'tce', 'tce.t': 1.0, 'tce.signal': 'class',
                                 **CLASS_CROP},
    'tce_size_prior_t1': {'sampling.name': 'tce', 'tce.t': 1.0, 'tce.signal': 'class',
                          'tce.size_prior': 1.0, **CLASS_CROP},
    'uniform_crop': {'sampling.name': 'tce', 'tce.t': 0.0, **CLASS_CROP},
    # Baselines users compare with.
    'rcs': RCS,
    'focal_no_alpha': {'loss.name': 'focal_no_alpha'},
    'ce_sqrt_inv_freq': {'loss.name': 'ce_sqrt_inv_freq'},
    'ohem': {'loss.name': 'ohem'},
    'recall': {'loss.name': 'recall'},
}

# The t sweep (fewer seeds: `--sweep_seeds`): Algorithm 1 with either signal at t = 10 and 100,
# eq. 3 at t = 0.3 and 3; with the t = 1 runs of METHODS they span t in {1, 10, 100} and
# {0.3, 1, 3}. Same code paths as their t = 1 methods, so `--quick` leaves them out.
SWEEP = {
    'tce_t10': {'sampling.name': 'tce', 'tce.t': 10.0},
    'tce_t100': {'sampling.name': 'tce', 'tce.t': 100.0},
    'tce_signal_class_t10': {'sampling.name': 'tce', 'tce.t': 10.0, 'tce.signal': 'class'},
    'tce_signal_class_t100': {'sampling.name': 'tce', 'tce.t': 100.0, 'tce.signal': 'class'},
    'tce_class_t0.3': {'loss.name': 'tce_class', 'tce.t': 0.3},
    'tce_class_t3': {'loss.name': 'tce_class', 'tce.t': 3.0},
}
ALL_METHODS = {**METHODS, **SWEEP}

# The t sweep's figure (sweep.png, added 2026-11-28 like ABLATIONS): title -> {t: method}. At
# t = 0 Algorithm 1 draws classes uniformly whatever its signal, so `uniform` starts both.
SWEEP_SERIES = {
    'Algorithm 1, image signal': {0.0: 'uniform', 0.1: 'tce_t0.1', 1.0: 'tce_t1',
                                  10.0: 'tce_t10', 100.0: 'tce_t100'},
    'Algorithm 1, class signal': {0.0: 'uniform', 1.0: 'tce_signal_class_t1',
                                  10.0: 'tce_signal_class_t10', 100.0: 'tce_signal_class_t100'},
    'eq. 3 (class-level tilted loss)': {0.3: 'tce_class_t0.3', 1.0: 'tce_class_t1',
                                        3.0: 'tce_class_t3'},
}

# The ablations: pairs (question, baseline, variant) that differ in one of the reasons
# docs/method.md gives for the first study's null result. The pairs are the ones
# docs/results.md listed before the study's runs ("What the ablations isolate"); the contrasts
# were added to the summary on 2026-11-28, with 19 of the runs recorded and none of them read
# for the choice. Each family is corrected on its own (Holm over its pairs x statistics).
ABLATIONS = {
    'Ablations': [
        ('signal', 'tce_t1', 'tce_signal_class_t1'),
        ('signal, with crops', 'tce_crop_t1', 'tce_signal_class_crop_t1'),
        ('tilt', 'uniform', 'tce_t0.1'),
        ('tilt', 'uniform', 'tce_t1'),
        ('size prior', 'tce_signal_class_crop_t1', 'tce_size_prior_t1'),
        ('crop', 'tce_t1', 'tce_crop_t1'),
        ('crop, t = 0', 'uniform', 'uniform_crop'),
    ],
    't sweep ablations': [
        ('tilt, image signal', 'tce_t1', 'tce_t10'),
        ('tilt, image signal', 'tce_t1', 'tce_t100'),
        ('tilt, class signal', 'tce_signal_class_t1', 'tce_signal_class_t10'),
        ('tilt, class signal', 'tce_signal_class_t1', 'tce_signal_class_t100'),
        ('tilt, eq. 3', 'tce_class_t1', 'tce_class_t0.3'),
        ('tilt, eq. 3', 'tce_class_t1', 'tce_class_t3'),
    ],
}
# The paper's methods (at any t); the rest are added beside them. The report's Pareto figure
# marks the two kinds apart, and the sweep's points apart from the 5-seed methods.
PAPER_METHODS = ('mcce', 'focal', 'uniform', 'tce_t0.1', 'tce_t1', 'tce_image_t1',
                 'tce_class_t1', 'tce_t10', 'tce_t100', 'tce_class_t0.3', 'tce_class_t3')


# The qualitative figure's columns (all 25 methods would not fit a page): the reference, the
# paper's methods at their published t, and one of each added family. Chosen before the runs.
QUALITATIVE_METHODS = ('mcce', 'focal', 'uniform', 'tce_t0.1', 'tce_t1', 'tce_image_t1',
                       'tce_class_t1', 'tce_signal_class_crop_t1', 'tce_size_prior_t1', 'rcs',
                       'ce_sqrt_inv_freq', 'ohem', 'recall')
# Its images and runs (added 2026-11-28, after 10 of the study's runs: the figure must rebuild
# from the committed records, and checkpoints are not committed). Each of those methods' run
# with seed QUALITATIVE_SEED stores its predictions of the QUALITATIVE_IMAGES validation images
# where QUALITATIVE_CLASSES appear most, with its record (RECORDS/<run>/qualitative/).
# The classes: MCCE's three worst in its three calibration runs (seeds 0-2, finished before
# every other run of the study). Seed 1: the seed-0 runs recorded before this lost their
# checkpoints with the machine they trained on; a recorded run of the figure without
# predictions is trained again (same config and seed) and compared with its record.
QUALITATIVE_SEED = 1
QUALITATIVE_CLASSES = ('rider', 'motorcycle', 'fence')
QUALITATIVE_IMAGES = 4


def method_kind(method: str) -> str:
  kind = 'paper' if method in PAPER_METHODS else 'added'
  return kind + (' (t sweep)' if method in SWEEP else '')


def study_runs(methods: list[str], seeds: int, sweep_seeds: int) -> list[tuple[str, int]]:
  """(method, seed) in training order: seed by seed, so a study stopped at any point holds
  the same number of seeds of every method; a SWEEP method gets min(seeds, sweep_seeds)."""
  count = {m: min(seeds, sweep_seeds) if m in SWEEP else seeds for m in methods}
  return [(m, s) for s in range(seeds) for m in methods if s < count[m]]


def run_config(method: str, seed: int, *, steps: int, quick: bool, data_dir: str | None):
  config = synthetic_mcce.get_config()
  config.name = method
  config.seed = seed
  config.dataset.data_dir = data_dir
  config.train.num_steps = steps
  config.train.eval_every = steps
  config.train.checkpoint_every = max(steps // 5, 1)
  config.train.log_every = max(min(50, steps // 2), 1)
  if quick:
    tiny.apply(config)
  config.update_from_flattened_dict(ALL_METHODS[method])
  if quick:  # the tiny profile's 32 x 64 images and 32 x 32 crops: the same fractions
    if config.sampling.min_pixels:
      config.sampling.min_pixels = 11
    config.sampling.class_crop.min_pixels = 6
    config.loss.ohem_min_kept = 195
  return config


def use_compilation_cache(directory: str) -> None:
  """A persistent XLA compilation cache for the runs (unless JAX_COMPILATION_CACHE_DIR is
  set): the seeds of a method compile the same programs (the seed is data, not code), and
  every method shares the evaluation program, so only the first run of each compiles. A hit
  is the very executable a compile would give (the key covers program, flags and versions)."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def finished(workdir: str, steps: int) -> bool:
  return os.path.exists(rundir.eval_path(workdir, steps))


def record_run(workdir: str, records: str) -> str:
  """Copies the run's small records (`rundir.copy_records`: config.json, eval/*.json,
  environment/*.json, stored predictions) to RECORDS/<run name>/; returns that path."""
  return rundir.copy_records(workdir, os.path.join(records, os.path.basename(
      os.path.normpath(workdir))))


def qualitative_images(config) -> list[int]:
  """The validation images of the qualitative figure: where QUALITATIVE_CLASSES appear most."""
  names = list(datasets.get_spec(config).class_names)
  source = datasets.load_source(config, config.dataset.eval_split)
  return report.qualitative_indices(source, [names.index(c) for c in QUALITATIVE_CLASSES],
                                    QUALITATIVE_IMAGES)


def store_predictions(workdir: str, indices: list[int]) -> None:
  """Predicts the validation images `indices` with the run's latest checkpoint and stores the
  label maps in WORKDIR/qualitative/ (report.write_predictions)."""
  config = workdir_lib.load_run_config(workdir)
  source = datasets.load_source(config, config.dataset.eval_split)
  predictions = evaluate.predict_labels(config, workdir, [source[i]['image'] for i in indices])
  report.write_predictions(workdir, indices, predictions, datasets.get_spec(config).palette)


def compare_with_record(workdir: str, record: str, steps: int) -> bool:
  """Whether a run trained again reproduced its record's evaluation exactly; prints which."""
  again = records_lib.read_json(rundir.eval_path(workdir, steps))
  recorded = records_lib.read_json(rundir.eval_path(record, steps))
  same = again == recorded
  print(f'{os.path.basename(os.path.normpath(record))} trained again: its evaluation '
        + ('equals the record exactly' if same else
           f'differs from the record (mIoU {again["miou"]:.4f} vs {recorded["miou"]:.4f}); the '
           'record stays the study\'s number'))
  return same


def check_record(record: str, config) -> None:
  """Raises ValueError when the recorded run trained something other than `config` would
  (a field outside workdir.HARMLESS_PREFIXES differs): a stale record is never reused."""
  changes = workdir_lib.harmful(workdir_lib.config_changes(
      workdir_lib.load_run_config(record), config))
  if changes:
    listed = '; '.join(f'{k}: recorded {a!r}, now {b!r}' for k, (a, b) in changes.items())
    raise ValueError(f'The record {record} was made with another config ({listed}). Move it '
                     'away to train the run again, or run the version that made it.')


def run_experiment(out: str, *, seeds: int, steps: int | None = None, quick: bool = False,
                   data_dir: str | None = None, methods: list[str] | None = None,
                   records: str | None = None, sweep_seeds: int = 3,
                   train_missing: bool = True, report_dir: str | None = None) -> dict:
  """Trains what is not finished yet (in OUT or in RECORDS; with `train_missing` False, leaves
  it out), then writes the report into `report_dir` (default OUT/report); returns the report.
  `methods` defaults to METHODS and SWEEP (METHODS alone with `quick`)."""
  if methods is None:
    methods = list(METHODS) if quick else list(ALL_METHODS)
  unknown = [m for m in methods if m not in ALL_METHODS]
  if unknown:
    raise ValueError(f'Unknown methods {unknown}; known: {", ".join(ALL_METHODS)}')
  if steps is None:
    steps = synthetic_mcce.get_config().train.num_steps
  runs = study_runs(methods, seeds, sweep_seeds)
  use_compilation_cache(os.path.join(out, 'xla_cache'))
  qualitative_seed = min(QUALITATIVE_SEED, seeds - 1)
  indices = []  # the qualitative figure's images, found when first needed

  def figure_images() -> list[int]:
    if not indices:
      indices.extend(qualitative_images(run_config(methods[0], 0, steps=steps, quick=quick,
                                                   data_dir=data_dir)))
    return indices

  def has_predictions(run: str) -> bool:
    return (os.path.isdir(os.path.dirname(rundir.qualitative_path(run, 0))) and
            report.read_predictions(run, figure_images()) is not None)

  def showable(run: str) -> bool:
    return os.path.isdir(rundir.checkpoints_dir(run)) or has_predictions(run)

  done, sources = [], []  # finished runs, and the folder each one's records are read from
  missing = []
  with tqdm.tqdm(total=len(runs) * steps, desc='experiment', unit='step') as progress:
    for method, seed in runs:
      config = run_config(method, seed, steps=steps, quick=quick, data_dir=data_dir)
      workdir = os.path.join(out, f'{method}_s{seed}')
      record = records and os.path.join(records, f'{method}_s{seed}')
      recorded = bool(record) and finished(record, steps)
      if recorded:
        check_record(record, config)
      shown = method in QUALITATIVE_METHODS and seed == qualitative_seed
      # A recorded run of the qualitative figure without its predictions trains again.
      retrain = train_missing and shown and recorded and not has_predictions(record)
      if recorded and not retrain:  # the record is the study's run; never overwritten (a
        source = record              # finished copy in OUT may come from another machine)
      elif finished(workdir, steps) or train_missing:
        if not finished(workdir, steps):
          train.train_and_evaluate(config, workdir)
        if shown and not has_predictions(workdir):
          store_predictions(workdir, figure_images())
        if retrain:  # the record keeps its evaluation; it gains the predictions
          compare_with_record(workdir, record, steps)
          rundir.copy_records(workdir, record, folders=(rundir.QUALITATIVE,))
        elif records:
          record_run(workdir, records)
        source = record if recorded else workdir
      else:
        missing.append(f'{method}_s{seed}')
        source = None
      if source:
        done.append((method, seed))
        sources.append(source)
      progress.update(steps)
  if missing:
    listed = missing if len(missing) <= 6 else missing[:5] + ['...', missing[-1]]
    print(f'Not finished, left out of the report: {len(missing)} runs ({", ".join(listed)})')
  if not done or done[0][0] != methods[0]:
    raise ValueError(f'No finished run of the reference method {methods[0]}: nothing to report')
  report_dir = report_dir or os.path.join(out, 'report')
  # The qualitative figure: the seed-QUALITATIVE_SEED run of each of its methods that has
  # stored predictions (or checkpoints to predict with).
  figure_runs = {m: s for (m, sd), s in zip(done, sources)
                 if m in QUALITATIVE_METHODS and sd == qualitative_seed}
  shown_runs = {m: s for m, s in figure_runs.items() if showable(s)}
  absent = [m for m in QUALITATIVE_METHODS if m in methods and m not in shown_runs]
  if methods[0] not in shown_runs:
    print('No qualitative figure: the reference has no finished seed-'
          f'{qualitative_seed} run with stored predictions or checkpoints.')
  elif absent:
    print(f'Left out of the qualitative figure (no finished seed-{qualitative_seed} run with '
          f'stored predictions or checkpoints): {", ".join(absent)}')
  # Labelled by method, not by the recorded config.name (a harmless field a record may hold
  # another value of, e.g. a calibration run reused as a study run).
  first = {}
  for (method, _), source in zip(done, sources):
    first.setdefault(method, source)
  result = report.make_report(
      sources, report_dir, reference=sources[0], labels=[m for m, _ in done],
      qualitative_images=QUALITATIVE_IMAGES if methods[0] in shown_runs else 0,
      kinds={m: method_kind(m) for m in first}, qualitative_labels=list(shown_runs),
      qualitative_indices=figure_images() if methods[0] in shown_runs else None,
      qualitative_runs=list(shown_runs.values()),
      qualitative_dataset=run_config(methods[0], 0, steps=steps, quick=quick,
                                     data_dir=data_dir).dataset,
      qualitative_title=(f'Validation images where {", ".join(QUALITATIVE_CLASSES)} (MCCE\'s '
                         f'worst classes in its calibration runs) appear most; seed '
                         f'{qualitative_seed} of each method'))
  families = {'Methods': [m for m in first if m in METHODS],
              't sweep': [m for m in first if m in SWEEP]}
  reference_runs = [w for (m, _), w in zip(done, sources) if m == methods[0]]
  profile = profile_table(*benchmark_profile(reference_runs, steps), label=methods[0])
  report.plot_sweep(result, report_dir, SWEEP_SERIES)
  contrasts = ablations(result, ABLATIONS)
  with open(os.path.join(report_dir, 'summary.md'), 'w') as f:
    f.write(summary(result, {k: v for k, v in families.items() if v}) + '\n\n' +
            (contrasts + '\n\n' if contrasts else '') + profile + '\n')
  print(profile)
  return result


SUMMARY_STATS = {'miou': 'mIoU', 'sorted_bottom': 'bottom 25% (MCCE\'s worst classes)',
                 'percentile_bottom_miou': 'own bottom 25%', 'worst': 'worst class',
                 'std': 'class-IoU std'}
ALPHA = stats.ALPHA  # significance level after Holm's correction


def _welch(entry: dict, reference: dict, n: int, n_ref: int) -> dict:
  return stats.welch(entry['mean'], entry['std'], n, reference['mean'], reference['std'], n_ref)


def _interval(c: dict) -> str:
  if not np.isfinite(c['low']):
    return f"{c['diff']:+.1f}"
  return f"{c['diff']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"


def classes_beyond_noise(entry: dict, reference: dict, n: int, n_ref: int) -> tuple[int, int]:
  """(better, worse): classes whose IoU differs from the reference's at ALPHA after Holm's
  correction over the classes present in both (Welch per class)."""
  return stats.beyond_noise(stats.per_class(entry, reference, n, n_ref), ALPHA)


def summary(report_json: dict, families: dict[str, list[str]] | None = None) -> str:
  """Markdown: per family of methods, each method's headline statistics (mean +- std over
  seeds) and their difference to the reference with a 95% confidence interval; bold where
  Welch's test is significant at ALPHA after Holm's correction over the family's table (every
  method x statistic); then the adjusted p-values, and per method the classes better / worse
  than the reference after Holm over the classes. `families` (title -> labels) defaults to one
  family of every label."""
  labels, reference = report_json['labels'], report_json['reference']
  ref, n_ref = labels[reference], len(labels[reference]['runs'])
  if families is None:
    families = {'': [l for l in labels if l != reference]}
  sections = []
  for title, members in families.items():
    members = [m for m in members if m in labels and m != reference]
    tests, adjusted, tested = _family(labels, [(m, reference) for m in members])
    lines = ([f'### {title}', ''] if title else []) + [
        '| method | runs | ' + ' | '.join(SUMMARY_STATS.values()) +
        f' | classes better / worse than {reference} |', '|---|---|' +
        '---|' * (len(SUMMARY_STATS) + 1)]
    for label in [reference] + members:
      entry, n = labels[label], len(labels[label]['runs'])
      cells = []
      for key in SUMMARY_STATS:
        cell = f"{entry['fairness'][key]['mean']:.1f} ± {entry['fairness'][key]['std']:.1f}"
        if label != reference:
          cell += f' ({_interval(tests[label, reference][key])})'
          if adjusted[(label, reference), key] <= ALPHA:
            cell = f'**{cell}**'
        cells.append(cell)
      counts = '' if label == reference else '{} / {}'.format(
          *classes_beyond_noise(entry, ref, n, n_ref))
      lines.append(f'| {label} | {n} | ' + ' | '.join(cells) + f' | {counts} |')
    lines += ['', f'Mean ± sample std over seeds; in brackets the difference to {reference} '
              "and its 95% confidence interval (Welch). **Bold**: Welch's two-sided test "
              f'significant at {ALPHA} after Holm\'s correction over the {tested} comparisons '
              'of this table (adjusted p-values below). Classes better / worse: per class, '
              f'Welch against {reference}, Holm over the classes, at {ALPHA}.', '',
              '| method | ' + ' | '.join(f'p ({v})' for v in SUMMARY_STATS.values()) + ' |',
              '|---|' + '---|' * len(SUMMARY_STATS)]
    for label in members:
      lines.append(f'| {label} | ' + _p_cells(adjusted, (label, reference)) + ' |')
    sections.append('\n'.join(lines))
  return '\n\n'.join(sections)


def _family(labels: dict, pairs: list[tuple[str, str]]) -> tuple[dict, dict, int]:
  """Welch's comparison of each (variant, baseline) pair on every SUMMARY_STATS statistic,
  and the p-values adjusted by Holm over the whole family (pairs x statistics). Returns
  (tests[pair][statistic], adjusted[pair, statistic], the number of comparisons tested)."""
  tests = {(v, b): {k: _welch(labels[v]['fairness'][k], labels[b]['fairness'][k],
                              len(labels[v]['runs']), len(labels[b]['runs']))
                    for k in SUMMARY_STATS} for v, b in pairs}
  flat = [(pair, k) for pair in tests for k in SUMMARY_STATS]
  adjusted = dict(zip(flat, stats.holm([tests[pair][k]['p'] for pair, k in flat])))
  return tests, adjusted, int(sum(np.isfinite(p) for p in adjusted.values()))


def _p_cells(adjusted: dict, pair: tuple[str, str]) -> str:
  return ' | '.join('-' if not np.isfinite(adjusted[pair, k]) else f'{adjusted[pair, k]:.3g}'
                    for k in SUMMARY_STATS)


def ablations(report_json: dict, families: dict[str, list[tuple[str, str, str]]]) -> str:
  """Markdown: per family of ablations (title -> (question, baseline, variant) rows), the
  difference variant - baseline in each headline statistic with its 95% confidence interval
  (Welch); bold where Welch's test is significant at ALPHA after Holm's correction over the
  family's table (rows x statistics); the adjusted p-values; per row the classes better /
  worse in the variant than in the baseline (Holm over the classes). A row whose methods are
  not both in the report is left out, and a family without rows altogether; '' if none."""
  labels = report_json['labels']
  sections = []
  for title, rows in families.items():
    rows = [(q, b, v) for q, b, v in rows if b in labels and v in labels]
    if not rows:
      continue
    tests, adjusted, tested = _family(labels, [(v, b) for _, b, v in rows])
    lines = [f'### {title}', '',
             '| question | baseline | variant | runs | ' + ' | '.join(SUMMARY_STATS.values()) +
             ' | classes better / worse in the variant |',
             '|---|---|---|---|' + '---|' * (len(SUMMARY_STATS) + 1)]
    for question, b, v in rows:
      cells = [(f'**{_interval(tests[v, b][k])}**' if adjusted[(v, b), k] <= ALPHA
                else _interval(tests[v, b][k])) for k in SUMMARY_STATS]
      n_b, n_v = len(labels[b]['runs']), len(labels[v]['runs'])
      counts = '{} / {}'.format(*classes_beyond_noise(labels[v], labels[b], n_v, n_b))
      lines.append(f'| {question} | {b} | {v} | {n_b} / {n_v} | ' + ' | '.join(cells) +
                   f' | {counts} |')
    lines += ['', 'Variant minus baseline, and its 95% confidence interval (Welch); runs: '
              "baseline / variant. **Bold**: Welch's two-sided test significant at "
              f"{ALPHA} after Holm's correction over the {tested} comparisons of this table "
              '(adjusted p-values below). Classes better / worse: per class, Welch of the '
              f'variant against the baseline, Holm over the classes, at {ALPHA}.', '',
              '| baseline -> variant | ' + ' | '.join(f'p ({v})' for v in
                                                     SUMMARY_STATS.values()) + ' |',
              '|---|' + '---|' * len(SUMMARY_STATS)]
    for _, b, v in rows:
      lines.append(f'| {b} -> {v} | ' + _p_cells(adjusted, (v, b)) + ' |')
    sections.append('\n'.join(lines))
  return '\n\n'.join(sections)


# The benchmark's profile (docs/synthetic_dataset.md): the figures MCCE must meet on the study
# benchmark, with the paper's Table 1 (Cityscapes, DeepLabv3+ R101, MCCE) beside them.
PROFILE_TARGETS = {  # key: (description, low, high, paper's value)
    'worst': ('worst class (of the seed-mean IoUs)', 10.0, None, 48.5),
    'bottom5': ('mean of the 5 worst classes', 25.0, 60.0, 57.7),
    'top5': ('mean of the 5 best classes', 85.0, None, 94.8),
    'std': ('class-IoU std (ddof 1)', 10.0, 25.0, 15.0),
    'seed_std': ('seed-to-seed std of mIoU', None, 1.0, None),
}


def benchmark_profile(workdirs: list[str], steps: int) -> tuple[dict, list[str], np.ndarray]:
  """The profile figures of the runs in `workdirs` (one method, several seeds): returns
  (figures, class names, [seeds, K] per-class IoU with NaN for absent classes)."""
  records = []
  for workdir in workdirs:
    records.append(records_lib.read_json(rundir.eval_path(workdir, steps)))
  classes = list(records[0]['per_class_iou'])
  iou = np.array([[np.nan if r['per_class_iou'][c] is None else r['per_class_iou'][c]
                   for c in classes] for r in records], np.float64)
  mean = np.sort(np.nanmean(iou[:, ~np.all(np.isnan(iou), axis=0)], axis=0))
  mious = [r['miou'] for r in records]
  figures = {'worst': mean[0], 'bottom5': mean[:5].mean(), 'top5': mean[-5:].mean(),
             'std': np.std(mean, ddof=1),
             'seed_std': np.std(mious, ddof=1) if len(mious) > 1 else float('nan'),
             'miou': float(np.mean(mious)), 'min_any_seed': float(np.nanmin(iou))}
  return figures, classes, iou


def profile_table(figures: dict, classes: list[str], iou: np.ndarray, label: str) -> str:
  """Markdown: the per-class IoU (seeds and mean, worst first) and the five profile figures
  against their target ranges and the paper's Table 1."""
  present = ~np.all(np.isnan(iou), axis=0)
  mean = np.full(iou.shape[1], np.nan)
  mean[present] = np.nanmean(iou[:, present], axis=0)
  lines = [f'### Benchmark profile of {label} ({len(iou)} seeds)', '',
           '| class | mean IoU | ' + ' | '.join(f'seed {s}' for s in range(len(iou))) + ' |',
           '|---|---|' + '---|' * len(iou)]
  for c in np.argsort(np.where(np.isnan(mean), np.inf, mean)):
    lines.append(f'| {classes[c]} | {mean[c]:.1f} | ' +
                 ' | '.join(f'{v:.1f}' for v in iou[:, c]) + ' |')
  lines += ['', '| figure | value | target | paper (Table 1, MCCE) | in range |',
            '|---|---|---|---|---|']
  for key, (what, low, high, paper) in PROFILE_TARGETS.items():
    value = figures[key]
    target = (f'{low:g} - {high:g}' if low is not None and high is not None else
              f'>= {low:g}' if low is not None else f'<= {high:g}')
    ok = np.isfinite(value) and (low is None or value >= low) and (high is None or
                                                                   value <= high)
    lines.append(f'| {what} | {value:.1f} | {target} | '
                 f'{"" if paper is None else paper} | {"yes" if ok else "**no**"} |')
  lines.append(f'| lowest class IoU in any seed | {figures["min_any_seed"]:.1f} | > 0 | | '
               f'{"yes" if figures["min_any_seed"] > 0 else "**no**"} |')
  lines.append(f'| mIoU | {figures["miou"]:.1f} | | 75.8 | |')
  return '\n'.join(lines)


def main(argv):
  del argv
  seeds, steps = (1, 4) if FLAGS.quick else (FLAGS.seeds, FLAGS.steps)
  try:
    run_experiment(FLAGS.out, seeds=seeds, steps=steps, quick=FLAGS.quick,
                   data_dir=FLAGS.data_dir, methods=FLAGS.methods, records=FLAGS.records,
                   sweep_seeds=FLAGS.sweep_seeds, train_missing=FLAGS.train,
                   report_dir=FLAGS.report_dir)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  report_dir = FLAGS.report_dir or os.path.join(FLAGS.out, 'report')
  print(f'Report: {os.path.join(report_dir, "report.md")}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
