"""What TensorBoard shows of a run: the names of its scalars, the Custom Scalars page (every
class's IoU on one chart, every class's sampling probability, tilted loss and draws on one
chart each, the fairness statistics on one chart), and at each evaluation a per-class IoU bar
chart on the Images page, sorted, where forty scalar lines in a few colours cannot be told
apart.

Tag names decide what a newcomer sees first: TensorBoard's Time Series page sorts the tags,
groups them by their first path segment and opens the first two groups. So the two groups
that sort first hold what matters: `eval/` (mIoU, the run's own bottom quantile and worst
class, pixel accuracy and the other fairness statistics, the per-class bar chart and the
prediction previews) and `loss/` (the training loss, the training MCCE, the validation
cross-entropy); the long per-class series (`per_class_iou/`, `sampling/`) and the training
diagnostics (`train/`) follow, closed. Each name has one meaning, that of the same key in the
run's evaluation record (eval/<step>.json); statistics against a reference model
(`sorted_bottom`, `sorted_top`) exist only in reports, where there is a reference.
"""

from __future__ import annotations

import io

import numpy as np

from tce_jax.data.classes import class_tag

# Training metrics shown in the `loss/` group (the rest go to `train/<name>`).
TRAIN_LOSS_TAGS = {'loss': 'loss/train', 'mcce': 'loss/train_mcce'}


def train_scalars(summary: dict[str, float]) -> dict[str, float]:
  """TensorBoard tags of the training metrics {name: value} (names as in the train step's
  metrics: loss, mcce, pixel_accuracy, grad_norm, learning_rate, ...)."""
  return {TRAIN_LOSS_TAGS.get(k, f'train/{k}'): v for k, v in summary.items()}


def eval_scalars(record: dict, suffix: str = '') -> dict[str, float]:
  """TensorBoard tags of an evaluation record (evaluation.summarize) written with file suffix
  `suffix` (rundir.record_suffix: '' for the run's own split and protocol): its headline and
  fairness statistics under `eval<suffix>/`, its cross-entropy under `loss/eval<suffix>`, and
  the IoU of each class under `per_class_iou<suffix>/<class>`."""
  prefix = f'eval{suffix}'
  scalars = {f'{prefix}/miou': record['miou'], f'{prefix}/pixel_accuracy': record['pixel_accuracy']}
  if 'cross_entropy' in record:
    scalars[f'loss/{prefix}'] = record['cross_entropy']
  scalars.update({f'{prefix}/{k}': v for k, v in record['fairness'].items()
                  if k not in ('miou', 'num_classes')})
  scalars.update({f'{prefix}/{k}': record['fairness_extra'][k] for k in ('gini', 'cvar')
                  if k in record['fairness_extra']})
  scalars.update({f'per_class_iou{suffix}/{class_tag(name)}': v
                  for name, v in record['per_class_iou'].items() if v is not None})
  return scalars


def per_class_chart(record: dict, title: str = '') -> np.ndarray:
  """RGB uint8 image: the record's per-class IoU as horizontal bars, worst at the top, each
  with its value; absent classes left out. For TensorBoard's Images page."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  ious = sorted(((v, c) for c, v in record['per_class_iou'].items() if v is not None),
                reverse=True)
  fig, ax = plt.subplots(figsize=(6.0, 0.8 + 0.22 * len(ious)))
  ax.barh(range(len(ious)), [v for v, _ in ious], color='#0072B2', height=0.7)
  for y, (v, _) in enumerate(ious):
    ax.text(v + 1, y, f'{v:.1f}', va='center', fontsize=7)
  ax.set_yticks(range(len(ious)), [c for _, c in ious], fontsize=7)
  ax.set_xlim(0, 110)
  ax.set_xlabel('IoU (%)', fontsize=8)
  ax.set_title(title or f"step {record['step']}: mIoU {record['miou']:.1f}, "
               f"{record.get('split', 'validation')}", fontsize=9)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  plt.close(fig)
  buffer.seek(0)
  with Image.open(buffer) as image:
    return np.asarray(image.convert('RGB'))


def titled_preview(grid: np.ndarray, panel_width: int, shown: np.ndarray,
                   class_names: list[str], palette: np.ndarray) -> np.ndarray:
  """`grid` (evaluator.preview_grid's rows of image | ground truth | prediction, panels
  `panel_width` + 4 apart) with a header naming the columns and a legend of the classes in
  `shown` (label ids; others, e.g. the ignore label, left out) in their colours."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  header, swatch, line = 16, 10, 14
  classes = [int(c) for c in np.unique(shown) if 0 <= c < len(class_names)]
  width = grid.shape[1]
  entries, rows, x = [], 0, 0  # (x, row, class): the legend flows into rows of `width`
  for c in classes:
    size = swatch + 4 + 6 * len(class_names[c]) + 12
    if x + size > width and x > 0:
      rows, x = rows + 1, 0
    entries.append((x, rows, c))
    x += size
  legend = (rows + 1) * line + 4 if entries else 0
  canvas = Image.new('RGB', (width, header + grid.shape[0] + legend), 'white')
  canvas.paste(Image.fromarray(grid), (0, header))
  draw = ImageDraw.Draw(canvas)
  for i, title in enumerate(('image', 'ground truth', 'prediction')):
    draw.text((i * (panel_width + 4) + 2, 2), title, fill='black')
  top = header + grid.shape[0] + 4
  for x, row, c in entries:
    y = top + row * line
    draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(v) for v in palette[c]),
                   outline='black')
    draw.text((x + swatch + 4, y - 1), class_names[c], fill='black')
  return np.asarray(canvas)


def write(workdir: str) -> None:
  """Writes the run's Custom Scalars layout into its event files (at step 0)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.custom_scalar import layout_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.custom_scalar import summary as custom_scalar  # pylint: disable=all

  def chart(title, *patterns):
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(
        tag=list(patterns)))

  layout = layout_pb2.Layout(category=[
      layout_pb2.Category(title='Classes compared', chart=[
          chart('validation IoU of every class (%)', r'^per_class_iou/.*'),
          chart('validation mIoU and fairness statistics (%)',
                r'^eval/(miou|percentile_.*miou|worst|std)$'),
      ]),
      layout_pb2.Category(title='Losses', chart=[
          chart('training loss (the configured one), training and validation cross-entropy',
                r'^loss/(train|train_mcce|eval)$'),
      ]),
      layout_pb2.Category(title='Sampling (class-conditional samplers)', chart=[
          chart('sampling probability of every class', r'^sampling/probability/.*'),
          chart('EMA tilted loss of every class (log)', r'^sampling/log_tilted/.*'),
          chart('draws of every class', r'^sampling/draw_count/.*'),
      ]),
  ])
  with tf.summary.create_file_writer(workdir).as_default() as _:
    tf.summary.experimental.write_raw_pb(custom_scalar.pb(layout).SerializeToString(), step=0)
    tf.summary.flush()
