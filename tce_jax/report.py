"""Tables and figures comparing runs: the command line and `make_report`.

  python -m tce_jax.report --runs A B ... --reference A --out DIR

Reads each run's config.json and latest evaluation (RUN/eval/<step>.json), groups runs by
label (the config's `name`, or --labels; several runs under one label are seeds: mean +- std),
and writes report.md, report.csv, report.json, and the figures per_class_iou,
per_class_difference (each label minus the reference, per class, differences beyond seed
noise framed), fairness, pareto (mIoU against the reference's worst classes), confusion and
qualitative (validation images where the reference's worst classes appear, with every
label's prediction), each as .png and .pdf, into DIR. Classes are sorted by the reference's
IoU, worst first. The pieces live in `tce_jax.analysis`: loading (`runs`), tables
(`tables`), and the figures, a registry of one module each (`registry`, `figures/`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from tce_jax import cli
from tce_jax import records
from tce_jax.analysis import figures as _figures  # noqa: F401  (registers the built-in figures)
from tce_jax.analysis import registry
from tce_jax.analysis import tables
from tce_jax.analysis.figures.sweep import plot_sweep  # noqa: F401  (public here too)
from tce_jax.analysis.placement import label_offsets, pareto_front  # noqa: F401
from tce_jax.analysis.predictions import (QUALITATIVE_DIR, qualitative_indices,  # noqa: F401
                                          read_predictions, write_predictions)
from tce_jax.analysis.runs import (STATS, comparability_warnings, latest_eval,  # noqa: F401
                                   load_runs, summarize_runs)
from tce_jax.analysis.style import KIND_STYLES  # noqa: F401
from tce_jax.analysis.tables import markdown  # noqa: F401

FLAGS = flags.FLAGS


def _define_flags():
  """Command-line flags, defined only when run as a program (importing defines none)."""
  flags.DEFINE_list('runs', None, 'Run directories to compare (space or comma separated).')
  flags.DEFINE_string('reference', None, 'The reference run (default: the first run).')
  flags.DEFINE_list('labels', None, 'Labels of the runs, in order (default: config names).')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_integer('qualitative_images', 4,
                       'Validation images in qualitative.png (0: none).')


def make_report(runs: Sequence[str], out: str, *, reference: str | None = None,
                labels: Sequence[str] | None = None, qualitative_images: int = 4,
                kinds: dict[str, str] | None = None,
                qualitative_labels: Sequence[str] | None = None,
                qualitative_indices: Sequence[int] | None = None,
                qualitative_runs: Sequence[str] | None = None,
                qualitative_title: str | None = None,
                qualitative_dataset: ml_collections.ConfigDict | None = None,
                figures: Sequence[str] | None = None,
                figure_options: Mapping[str, Mapping[str, Any]] | None = None,
                fixed_classes: Sequence[str] = ()) -> dict:
  """Writes every report file into `out`; returns the report dict (as report.json).

  `figures` names the registered figures to draw (default: `registry.DEFAULT`, in order),
  `figure_options` gives each its options by name. The keyword arguments before them are
  the options of the built-in figures, kept for existing callers: `kinds` (label -> a
  KIND_STYLES key) marks the labels apart in the Pareto figure; the qualitative figure
  (`qualitative_images` > 0): `qualitative_labels` limits its columns (the reference always
  shown), `qualitative_indices` fixes its validation images, `qualitative_runs` the run each
  label shows, `qualitative_title` its title, `qualitative_dataset` where its images are
  read from (figures.qualitative.plot_qualitative). `fixed_classes` adds the mean IoU over
  those classes to each label's fairness (analysis.runs.summarize_runs)."""
  loaded = load_runs(runs, labels)
  reference = reference or runs[0]
  if not any(os.path.samefile(r['run'], reference) for r in loaded):
    raise ValueError(f'--reference={reference} is not one of --runs')
  fraction = loaded[0]['config'].eval.fairness_fraction
  report = summarize_runs(loaded, reference, fraction, fixed_classes)
  report['warnings'] = comparability_warnings(loaded)
  for warning in report['warnings']:
    logging.warning('%s', warning)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write(tables.markdown(report))
  records.write_json(os.path.join(out, 'report.json'), report)
  tables.write_csv(report, os.path.join(out, 'report.csv'))
  options = {'pareto': {'kinds': kinds},
             'qualitative': {'num_images': qualitative_images, 'labels': qualitative_labels,
                             'indices': qualitative_indices, 'runs': qualitative_runs,
                             'title': qualitative_title, 'dataset': qualitative_dataset}}
  for name, given in (figure_options or {}).items():
    options[name] = {**options.get(name, {}), **given}
  for name in (registry.DEFAULT if figures is None else figures):
    if name not in registry.FIGURES:
      raise ValueError(f'No figure {name!r}; registered: {sorted(registry.FIGURES)}')
    registry.FIGURES[name](loaded, report, out, options.get(name, {}))
  return report


def main(argv):
  cli.quiet_libraries()
  runs = list(FLAGS.runs or []) + list(argv[1:])  # `--runs A B C` leaves B C in argv
  if not runs or not FLAGS.out:
    raise app.UsageError('Give --runs RUN [RUN ...] and --out DIR')
  try:
    os.makedirs(FLAGS.out, exist_ok=True)
  except OSError as e:
    cli.exit_on(ValueError(f'--out {FLAGS.out} cannot be created: {e.strerror or e} (a file '
                           'in the way?)'))
  try:
    result = make_report(runs, FLAGS.out, reference=FLAGS.reference, labels=FLAGS.labels,
                         qualitative_images=FLAGS.qualitative_images)
  except (ValueError, OSError) as e:
    cli.exit_on(e)
  for warning in result['warnings']:
    print(f'WARNING: {warning}')
  print(f'Wrote the report to {FLAGS.out}/report.md')


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=cli.parse_flags)
