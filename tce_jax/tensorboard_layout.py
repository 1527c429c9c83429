"""TensorBoard's Custom Scalars page of a run: every class's IoU on one chart, every class's
sampling probability (tilted loss, draws) on one chart, the fairness statistics on one chart,
so that classes are compared at a glance rather than on separate pages."""

from __future__ import annotations


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
