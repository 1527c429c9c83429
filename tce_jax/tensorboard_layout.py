"""What TensorBoard shows of a run beyond its scalars: the Custom Scalars page (every class's
IoU on one chart, every class's sampling probability, tilted loss and draws on one chart each,
the fairness statistics on one chart), and at each evaluation a per-class IoU bar chart on
the Images page, sorted, where forty scalar lines in a few colours cannot be told apart."""

from __future__ import annotations

import io

import numpy as np


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
          chart('validation IoU of every class (%)', r'^eval/iou/.*'),
          chart('validation mIoU and fairness statistics (%)', r'^eval/miou$',
                r'^eval/fairness/(sorted_|percentile_.*miou|worst|std).*'),
      ]),
      layout_pb2.Category(title='Losses', chart=[
          chart('training loss (the configured one), training and validation cross-entropy',
                r'^train/(loss|mcce)$', r'^eval/cross_entropy$'),
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
