"""qualitative.png: images where the reference's worst classes appear, with every label's
prediction."""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from tce_jax.analysis import registry
from tce_jax.analysis import predictions as predictions_lib
from tce_jax.analysis import style as style_lib


def class_colors(label_maps: Sequence[np.ndarray],
                 palette) -> tuple[np.ndarray, list[int], list[int]]:
  """The colours of the figure: the dataset's `palette` with the classes present in
  `label_maps` told apart (`style.distinct_palette`, the most common class first); returns
  the palette, the classes present and those recoloured."""
  num_classes = len(palette)
  counts = np.bincount(np.concatenate([m.ravel() for m in label_maps]).clip(0, num_classes),
                       minlength=num_classes + 1)[:num_classes]
  shown = [int(c) for c in np.argsort(-counts, kind='stable') if counts[c] > 0]
  colors = style_lib.distinct_palette(palette, shown)
  recoloured = [c for c in shown if (colors[c] != np.asarray(palette[c])).any()]
  return colors, shown, recoloured


def plot_qualitative(runs: list[dict], report: dict, out: str, num_images: int,
                     labels: Sequence[str] | None = None,
                     indices: Sequence[int] | None = None,
                     qualitative_runs: Sequence[str] | None = None, title: str | None = None,
                     dataset: ml_collections.ConfigDict | None = None):
  """qualitative.png: image | ground truth | one prediction per label (those of `labels`, in
  the report's order; default all), on the validation images `indices` (default: the
  `num_images` where the reference's worst three classes appear most). Each label shows its
  run in `qualitative_runs` (default: its first run); a run's stored predictions
  (RUN/qualitative/) are used where they cover the images, else its checkpoint predicts.
  `title` replaces the figure's default title (which names the reference's worst classes);
  `dataset` (a config.dataset) the reference run's dataset config, e.g. to read the images from
  this machine's data_dir rather than the recorded one."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from tce_jax import evaluate  # pylint: disable=g-import-not-at-top
  from tce_jax.data import classes as classes_lib, datasets  # pylint: disable=g-import-not-at-top

  first = {}
  shown_runs = None if qualitative_runs is None else {os.path.abspath(r)
                                                      for r in qualitative_runs}
  for r in runs:
    if shown_runs is not None and os.path.abspath(r['run']) not in shown_runs:
      continue
    if labels is None or r['label'] in labels or r['label'] == report['reference']:
      first.setdefault(r['label'], r)
  if report['reference'] not in first:
    raise ValueError('The qualitative figure needs a run of the reference '
                     f'{report["reference"]!r} among qualitative_runs')
  config = first[report['reference']]['config']
  if dataset is not None:
    config = config.copy_and_resolve_references()
    config.dataset = dataset
  spec = datasets.get_spec(config)
  source = datasets.load_source(config, config.dataset.eval_split)
  names = list(spec.class_names)
  if indices is None:
    worst = [names.index(c) for c in report['class_order'][:3]]
    indices = predictions_lib.qualitative_indices(source, worst, num_images)
  chosen = [int(i) for i in indices]
  examples = [source[i] for i in chosen]
  predictions = {}
  for label, r in first.items():
    stored = predictions_lib.read_predictions(r['run'], chosen)
    predictions[label] = stored if stored is not None else evaluate.predict_labels(
        r['config'], r['run'], [e['image'] for e in examples])
  columns = ['image', 'ground truth'] + list(predictions)
  maps = [e['label'] for e in examples] + [p for ps in predictions.values() for p in ps]
  palette, shown, recoloured = class_colors(maps, spec.palette)
  fig, axes = plt.subplots(len(examples), len(columns),
                           figsize=(2.6 * len(columns), 1.6 * len(examples) + 0.6),
                           squeeze=False)
  for row, e in enumerate(examples):
    panels = [e['image'], classes_lib.colorize(e['label'], palette)]
    panels += [classes_lib.colorize(p[row], palette) for p in predictions.values()]
    for col, panel in enumerate(panels):
      axes[row, col].imshow(panel)
      axes[row, col].set_xticks([])
      axes[row, col].set_yticks([])
      if row == 0:
        axes[row, col].set_title(columns[col], fontsize=9)
    axes[row, 0].set_ylabel(f'#{chosen[row]}', fontsize=8)
  fig.suptitle(title or 'Validation images where the reference\'s worst classes (' +
               ', '.join(report['class_order'][:3]) + ') appear most', fontsize=10)
  from matplotlib.patches import Patch  # pylint: disable=g-import-not-at-top
  handles = [Patch(facecolor=palette[c] / 255, edgecolor='grey', label=names[c])
             for c in sorted(shown)]
  handles.append(Patch(facecolor='black', edgecolor='grey',
                       label='ignored (unlabelled, not scored)'))
  fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 6), fontsize=8,
             frameon=False, title_fontsize=8,
             title=(f"the dataset's colours, but {', '.join(names[c] for c in recoloured)} "
                    'recoloured (too close to another class shown)') if recoloured else None)
  fig.tight_layout(rect=(0, 0.04 + 0.035 * (math.ceil(len(handles) / 6) + bool(recoloured)),
                        1, 1))
  style_lib.save(fig, out, 'qualitative')
  plt.close(fig)


@registry.register('qualitative')
def draw(runs: list[dict], report: dict, out: str, options: Mapping[str, Any]) -> None:
  """qualitative; options: num_images (0: none), labels, indices, runs, title, dataset
  (plot_qualitative's arguments)."""
  if options.get('num_images', 4):
    plot_qualitative(runs, report, out, options.get('num_images', 4), options.get('labels'),
                     options.get('indices'), options.get('runs'), options.get('title'),
                     options.get('dataset'))
