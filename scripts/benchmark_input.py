"""Throughput of the Cityscapes training input pipeline at full resolution.

  python scripts/benchmark_input.py [--images=8] [--batches=20] [--threads=1,2]

Cityscapes cannot be downloaded here, so the script writes fake archives laid out like the
official ones, with full-resolution (1024 x 2048) street scenes drawn by the synthetic
renderer (pixel noise included, so the PNGs are about as large as real ones), prepares them
through the real path (`tce_jax.prepare`), and times the real training pipeline of
`configs/cityscapes_mcce.py` (PNG decode, label mapping and checks, random scale
0.5-2.0, pad, 769 x 769 crop, flip, batching) with 1 and more host threads.
"""

import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from tce_jax.configs import cityscapes_mcce
from tce_jax import prepare
from tce_jax.data import datasets
from tce_jax.data import fake_archives
from tce_jax.data import pipeline

FLAGS = flags.FLAGS
flags.DEFINE_integer('images', 8, 'Fake training images to write.')
flags.DEFINE_integer('batches', 20, 'Batches timed per setting.')
flags.DEFINE_integer('batch_size', 2, 'Images per batch (per-GPU batch of the paper).')
flags.DEFINE_list('threads', ['1', '2'], 'Loader thread counts to time.')
flags.DEFINE_float('gpu_steps_per_s', 1.0, 'Assumed train steps/s of one GPU (for the core '
                   'estimate; not measured here).')


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    fake_archives.make_cityscapes_scene_archives(tmp, FLAGS.images)
    size = os.path.getsize(os.path.join(tmp, 'leftImg8bit_trainvaltest.zip')) / FLAGS.images
    prepare.prepare('cityscapes', manual_dir=tmp, data_dir=os.path.join(tmp, 'tfds'),
                    verify=False)
    config = cityscapes_mcce.get_config()
    config.dataset.data_dir = os.path.join(tmp, 'tfds')
    source = datasets.load_source(config, 'train')
    batches = pipeline.TrainBatches(source, global_batch_size=FLAGS.batch_size, seed=0,
                                    crop_size=config.input.crop_size,
                                    scales=config.input.scales, flip=True)
    rows = []
    for threads in (int(t) for t in FLAGS.threads):
      prefetcher = pipeline.Prefetcher(batches, threads)
      for s in range(threads):
        prefetcher.submit(s)
      prefetcher.get(0)  # warm-up
      prefetcher.submit(threads)
      start = time.perf_counter()
      for s in range(1, FLAGS.batches + 1):
        prefetcher.get(s)
        prefetcher.submit(s + threads)
      elapsed = time.perf_counter() - start
      prefetcher.close()
      rows.append((threads, FLAGS.batches * FLAGS.batch_size / elapsed))
  print(f'\nCityscapes training pipeline, 1024 x 2048 PNGs (~{size / 1e6:.1f} MB each), crop '
        f'{tuple(config.input.crop_size)}, batch {FLAGS.batch_size}, {os.cpu_count()} cores')
  print('| loader threads | images/s | images/s per thread |')
  print('|---|---|---|')
  for threads, rate in rows:
    print(f'| {threads} | {rate:.1f} | {rate / threads:.1f} |')
  per_core = rows[0][1]
  need = 4 * FLAGS.batch_size * FLAGS.gpu_steps_per_s
  print(f'\n4 GPUs x batch {FLAGS.batch_size} at {FLAGS.gpu_steps_per_s} steps/s need '
        f'{need:.1f} images/s: about {int(np.ceil(need / per_core))} loader cores at '
        f'{per_core:.1f} images/s per core (assumed GPU rate; measure it on the GPU).')


if __name__ == '__main__':
  app.run(main)
