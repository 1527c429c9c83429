"""Samplers and losses plug in through their registries alone; evaluation needs only the model.

A toy sampler and a toy loss are registered from here (no edit of tce_jax/train.py) and
trained for a few steps; a checkpoint is evaluated with a training batch that does not suit
the devices and without the class index.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tce_jax import config_validation
from tce_jax import evaluate
from tce_jax import losses
from tce_jax import sampling
from tce_jax import train
from tce_jax import train_step
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data import pipeline


class RarestClassSampler(sampling.Sampler):
  """Every batch from D_c of the class with the fewest training pixels; counts its updates
  per class (a state that the train step must carry and checkpoint)."""
  name = 'rarest'
  class_conditional = True
  needs_class_index = True

  @classmethod
  def check_config(cls, config):
    if config.sampling.lag > 3:
      raise ValueError(f'config.sampling.lag={config.sampling.lag}: the toy sampler wants <= 3')

  @property
  def rarest(self) -> int:
    counts = np.where(self.available, self.class_index.pixel_counts, np.iinfo(np.int64).max)
    return int(np.argmin(counts))

  def init(self):
    return {'updates': jnp.zeros((self.num_classes,), jnp.int32)}

  def update(self, state, *, cls, logits, labels, mcce, axis_name):
    return {'updates': state['updates'].at[cls].add(1)}

  def draw(self, state, key):
    return jnp.int32(self.rarest)


TRACED = []


def scaled_tilted_ce(logits, labels, t, *, axis_name=None, class_weights=None, scale=1.0):
  """A toy tilted, class-weighted loss with an option: scale x weighted CE + 0 x t."""
  TRACED.append({'t': t, 'weights': class_weights, 'scale': scale})
  return scale * losses.cross_entropy(logits, labels, class_weights=class_weights,
                                      axis_name=axis_name) + 0.0 * t


def ones_weights(pixel_counts):
  return np.ones(len(pixel_counts), np.float32)


def test_a_toy_sampler_trains_through_the_registry(make_tiny_config, tmp_path, monkeypatch):
  monkeypatch.setitem(sampling.SAMPLERS, 'rarest', RarestClassSampler)
  drawn = []
  original = pipeline.TrainBatches.__call__

  def record(self, step, cls=None):
    drawn.append(cls)
    return original(self, step, cls)

  monkeypatch.setattr(pipeline.TrainBatches, '__call__', record)
  config = make_tiny_config({'sampling.name': 'rarest', 'train.num_steps': 4})
  with pytest.raises(ValueError, match='config.sampling.lag=5'):
    config_validation.validate_config(make_tiny_config({'sampling.name': 'rarest',
                                                        'sampling.lag': 5}), num_devices=2)
  train.train_and_evaluate(config, str(tmp_path))

  source = datasets.load_source(config, 'train')
  index = class_index_lib.load_class_index(source, progress=False)
  rarest = RarestClassSampler.from_config(config, num_classes=19, class_index=index).rarest
  assert drawn == [rarest] * 4  # every batch was drawn from D_rarest
  with ocp.CheckpointManager(os.path.join(tmp_path, 'checkpoints')) as manager:
    state = manager.restore(4)
  expected = np.zeros(19, np.int32)
  expected[rarest] = 4
  np.testing.assert_array_equal(state['sampler']['updates'], expected)
  np.testing.assert_array_equal(state['class_queue'], [rarest] * config.sampling.lag)
  assert os.path.exists(tmp_path / 'eval' / '4.json')


def test_a_toy_loss_trains_through_the_registry(make_tiny_config, tmp_path, monkeypatch):
  monkeypatch.setitem(losses.LOSSES, 'toy', losses.Loss(
      scaled_tilted_ce, tilted=True, class_weights=ones_weights,
      options={'scale': 'loss.focal_gamma'}))
  TRACED.clear()
  config = make_tiny_config({'loss.name': 'toy', 'loss.focal_gamma': 3.0, 'tce.t': 0.5,
                             'train.num_steps': 2, 'train.eval_every': 2,
                             'train.log_every': 2})
  record = train.train_and_evaluate(config, str(tmp_path))
  assert record['step'] == 2 and np.isfinite(record['miou'])
  assert TRACED, 'the registered loss was never called'
  assert all(call['scale'] == 3.0 for call in TRACED)
  np.testing.assert_array_equal(TRACED[0]['weights'], np.ones(19, np.float32))


def test_make_loss_fn_binds_each_registry_entry(make_tiny_config):
  """Every registered loss gets what its entry asks for, with no per-name code."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 4, 4, 19)).astype(np.float32)
  labels = rng.integers(0, 19, (2, 4, 4))
  weights = np.linspace(0.5, 2.0, 19).astype(np.float32)
  for name, loss in losses.LOSSES.items():
    config = make_tiny_config({'loss.name': name, 'tce.t': 0.7, 'loss.focal_gamma': 1.5})
    kwargs = {arg: config_validation.value(config, field) for arg, field in loss.options.items()}
    if loss.class_weights is not None:
      kwargs[loss.weights_arg] = weights
    args = (0.7,) if loss.tilted else ()
    expected = loss.fn(logits, labels, *args, **kwargs)
    got = train_step.make_loss_fn(config, weights)(logits, labels, 100, None)
    np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)


def test_deprecated_warmup_field_moves_to_the_tilt_section(make_tiny_config):
  config = make_tiny_config({'loss.t_warmup_steps': 7})
  config_validation.validate_config(config, num_devices=2)
  assert config.tce.t_warmup_steps == 7 and config.loss.t_warmup_steps is None
  both = make_tiny_config({'loss.t_warmup_steps': 7, 'tce.t_warmup_steps': 9})
  with pytest.raises(ValueError, match='config.loss.t_warmup_steps=7: deprecated'):
    config_validation.validate_config(both, num_devices=2)


def test_evaluate_needs_neither_a_fitting_train_batch_nor_the_class_index(
    make_tiny_config, tmp_path):
  """A Stochastic TCE run (which needs the class index to train) is evaluated with
  train.batch_size = 3 on 2 devices and the class-index cache deleted."""
  config = make_tiny_config({'sampling.name': 'tce', 'train.num_steps': 2,
                             'train.eval_every': 2, 'train.checkpoint_every': 2,
                             'dataset.data_dir': str(tmp_path / 'tfds')})
  workdir = tmp_path / 'run'
  trained = train.train_and_evaluate(config, str(workdir))
  cache = class_index_lib.cache_path(datasets.load_source(config, 'train'))
  os.remove(cache)
  with open(workdir / 'config.json') as f:
    saved = json.load(f)
  saved['train']['batch_size'] = 3
  with open(workdir / 'config.json', 'w') as f:
    json.dump(saved, f)
  assert jax.device_count() == 2
  record = evaluate.evaluate_run(str(workdir))
  assert record['step'] == 2
  assert record['confusion_matrix'] == trained['confusion_matrix']
  assert not os.path.exists(cache), 'evaluation built the class index'
