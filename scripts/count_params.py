"""Parameter count (per module, then `params: N`) and FLOPs of a config's model.

  python scripts/count_params.py --config=configs/cityscapes_mcce.py [--flops]

Shapes only (jax.eval_shape): nothing is computed. --flops compiles one forward pass at the
config's crop size and prints XLA's cost analysis (multiply-adds count as 2 FLOPs).
"""

import collections

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from tce_jax import models
from tce_jax.data import datasets

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config whose model to count.')
flags.DEFINE_bool('flops', False, 'Also compile a forward pass and print its FLOPs per image.')
flags.DEFINE_list('size', None, 'Input height,width for --flops (default: the crop size).')
flags.mark_flags_as_required(['config'])


def num_classes_of(config) -> int:
  if config.dataset.name in datasets.DATASETS:
    return datasets.DATASETS[config.dataset.name].num_classes
  return {'ade20k': 150}[config.dataset.name]


def main(argv):
  del argv
  config = FLAGS.config
  k = num_classes_of(config)
  model = models.create_model(config, k, train=False)
  shapes = jax.eval_shape(lambda: model.init(
      {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
      jnp.zeros((1, 64, 64, 3)), train=True))
  counts = collections.Counter()
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes['params'])[0]:
    names = [p.key for p in path]
    group = f"backbone/{names[1].split('_')[0]}" if names[0] == 'backbone' else names[0]
    counts[group] += int(np.prod(leaf.shape))
  print(f'{config.model.name} / {config.model.backbone} (width {config.model.width}), '
        f'{k} classes, output stride {config.model.output_stride}')
  for group, n in counts.items():
    print(f'  {group:32s} {n:>12,}')
  backbone = sum(n for g, n in counts.items() if g.startswith('backbone'))
  print(f"  {'backbone total':32s} {backbone:>12,}")
  print(f'params: {sum(counts.values())}')
  if FLAGS.flops:
    h, w = (int(v) for v in FLAGS.size) if FLAGS.size else config.input.crop_size
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, 64, 64, 3)), train=False))
    compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
        variables, jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    print(f"flops per image at {h}x{w} (forward): {cost['flops'] / 1e9:.1f} GFLOPs")


if __name__ == '__main__':
  app.run(main)
