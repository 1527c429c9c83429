"""The train step, config validation, and resuming, on tiny models and data."""

import functools
import json
import os

import jax
import ml_collections
import numpy as np
import optax
import pytest

from tce_jax import config_validation
from tce_jax import losses
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import sampling as sampling_lib
from tce_jax import train
from tce_jax import train_step
from tce_jax.data import class_index as class_index_lib
from tce_jax.data import datasets
from tce_jax.data import pipeline


@pytest.mark.parametrize('field,value,message', [
    ('loss.name', 'dice', "config.loss.name='dice'"),
    ('model.name', 'unet', "config.model.name='unet'"),
    ('model.backbone', 'vgg16', "config.model.backbone='vgg16'"),
    ('dataset.name', 'kitti', "config.dataset.name='kitti'"),
    ('sampling.name', 'random', "config.sampling.name='random'"),
    ('train.optimizer', 'adam', "config.train.optimizer='adam'"),
    ('train.batch_size', -8, 'config.train.batch_size=-8'),
    ('train.batch_size', 3, 'divisible by the number of devices'),
    ('input.eval_batch_size', 5, 'config.input.eval_batch_size=5'),
    ('train.num_steps', 0, 'config.train.num_steps=0'),
    ('train.learning_rate', -0.1, 'config.train.learning_rate=-0.1'),
    ('model.output_stride', 4, 'config.model.output_stride=4'),
    ('tce.gamma', 0.0, 'config.tce.gamma=0.0'),
    ('tce.t', 1000.0, 'config.tce.t=1000.0'),
    ('sampling.lag', 0, 'config.sampling.lag=0'),
    ('model.dropout', 1.0, 'config.model.dropout=1.0'),
    ('input.crop_size', (8, 8), 'config.input.crop_size'),
    ('train.weight_decay', -1.0, 'config.train.weight_decay=-1.0'),
    ('tce.signal', 'image', "config.tce.signal='image'"),
    ('tce.size_prior', 50.0, 'config.tce.size_prior=50.0'),
    ('sampling.rcs_temperature', 0.0, 'config.sampling.rcs_temperature=0.0'),
    ('sampling.class_crop.retries', 10, 'need a class-conditional sampler'),
    ('sampling.min_pixels', 100, 'only class-conditional samplers'),
    ('sampling.min_pixels', -1, 'config.sampling.min_pixels=-1'),
    ('loss.ohem_thresh', 1.5, 'config.loss.ohem_thresh=1.5'),
    ('loss.ohem_min_kept', -5, 'config.loss.ohem_min_kept=-5'),
])
def test_invalid_configs_name_the_field(make_tiny_config, field, value, message):
  overrides = {field: value}
  if field.startswith('tce.') or field == 'sampling.rcs_temperature':
    overrides['sampling.name'] = 'rcs' if field.startswith('sampling') else 'tce'
  config = make_tiny_config(overrides)
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
    config_validation.validate_config(config, num_devices=2)


def test_valid_config_passes(make_tiny_config):
  config_validation.validate_config(make_tiny_config(), num_devices=2)


def _state_and_batches(config, steps):
  source = datasets.load_source(config, 'train')
  index = class_index_lib.load_class_index(source, progress=False)
  batches = pipeline.TrainBatches(source, global_batch_size=config.train.batch_size,
                                  seed=config.seed, crop_size=config.input.crop_size,
                                  scales=config.input.scales, flip=True, class_index=index)
  return index, [batches(s, 5 if config.sampling.name == 'tce' else None) for s in range(steps)]


# Every loss is checked across devices in test_losses; here the whole step (BatchNorm sync,
# gradient averaging, sampler update) with two representative combinations.
# The Stochastic TCE case uses the class signal (its update reduces over the devices) and
# the class-size prior.
@pytest.mark.parametrize('loss,sampling', [('mcce', 'uniform'), ('tce_class', 'tce')])
def test_two_devices_give_the_same_step_as_one(make_tiny_config, loss, sampling):
  """Same global batch on 1 and 2 devices: same parameters, BN statistics and sampler."""
  config = make_tiny_config({'loss.name': loss, 'sampling.name': sampling, 'tce.t': 1.0,
                             'tce.signal': 'class', 'tce.size_prior': 1.0})
  index, batches = _state_and_batches(config, 2)
  weights = losses.inverse_frequency_weights(index.pixel_counts)
  num_classes = 19
  model = models.create_model(config, num_classes, train=True, axis_name=train_step.AXIS)
  tx = train_step.create_optimizer(config)
  sampler = sampling_lib.create_sampler(config, num_classes=num_classes, class_index=index)
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:2]):
    mesh = mesh_lib.make_mesh(devices)
    state = train_step.initial_train_state(
        config, model, tx, sampler,
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    step = train_step.make_train_step(config, model, tx, train_step.make_loss_fn(config, weights),
                                 sampler, mesh)
    for batch in batches:
      state, metrics, _ = step(state, batch)
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (one, m1), (two, m2) = results
  np.testing.assert_allclose(m1['loss'], m2['loss'], rtol=1e-5)
  for a, b in zip(jax.tree.leaves((one.params, one.batch_stats, one.sampler)),
                  jax.tree.leaves((two.params, two.batch_stats, two.sampler))):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize('optimizer', ['sgd', 'adamw'])
def test_optimizer_matches_a_float64_re_derivation(optimizer):
  """Three updates of `train_step.create_optimizer` against the update rules written out in
  float64: SGD with momentum and L2 added to the gradient (torch.optim.SGD), and AdamW with
  bias-corrected moments and decoupled decay (torch.optim.AdamW), on the poly schedule."""
  config = ml_collections.ConfigDict(dict(train=dict(
      optimizer=optimizer, learning_rate=0.1, momentum=0.9, weight_decay=0.01,
      poly_power=0.9, num_steps=5, grad_clip_norm=None)))
  tx = train_step.create_optimizer(config)
  rng = np.random.default_rng(0)
  params = {'w': rng.normal(size=(3, 2)).astype(np.float32), 'b': np.float32([0.5, -1.0])}
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(3)]
  state, current = tx.init(params), params
  for g in grads:
    updates, state = tx.update(g, state, current)
    current = optax.apply_updates(current, updates)
  for name in params:
    p = params[name].astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for k, g in enumerate(grads):
      lr = 0.1 * (1 - k / 5) ** 0.9
      g = g[name].astype(np.float64)
      if optimizer == 'sgd':
        m = 0.9 * m + g + 0.01 * p
        p = p - lr * m
      else:
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1 - 0.9 ** (k + 1)), v / (1 - 0.999 ** (k + 1))
        p = p - lr * (m_hat / (np.sqrt(v_hat) + 1e-8) + 0.01 * p)
    np.testing.assert_allclose(current[name], p, rtol=1e-5, atol=1e-6)


def test_training_reduces_the_loss(make_tiny_config):
  config = make_tiny_config({'train.learning_rate': 0.05})
  _, batches = _state_and_batches(config, 1)
  model = models.create_model(config, 19, train=True, axis_name=train_step.AXIS)
  tx = train_step.create_optimizer(config)
  mesh = mesh_lib.make_mesh()
  sampler = sampling_lib.create_sampler(config, num_classes=19)
  state = train_step.initial_train_state(config, model, tx, sampler,
                                    jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  step = train_step.make_train_step(config, model, tx, train_step.make_loss_fn(config, None), sampler,
                               mesh)
  losses = []
  for _ in range(4):  # the same batch again and again: the loss must go down
    state, metrics, _ = step(state, batches[0])
    losses.append(float(metrics['loss']))
  assert losses[-1] < losses[0], losses


def _params(workdir):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    restored = manager.restore(manager.latest_step())
  return restored


@pytest.mark.parametrize('overrides', [
    {'sampling.name': 'tce'},
    # rare class sampling with D_c restricted and class-aware crops (redrawn augmentations)
    {'sampling.name': 'rcs', 'sampling.min_pixels': 20, 'sampling.class_crop.retries': 4,
     'sampling.class_crop.min_pixels': 30},
], ids=['tce', 'rcs_class_crop'])
def test_interrupted_and_resumed_run_equals_uninterrupted(make_tiny_config, tmp_path,
                                                          monkeypatch, overrides):
  """With a class-conditional sampler, so the sampler state and the queue of drawn classes
  resume too."""
  config = make_tiny_config({**overrides, 'train.num_steps': 6,
                             'train.eval_every': 3, 'train.checkpoint_every': 3})
  train.train_and_evaluate(config, str(tmp_path / 'straight'))

  original = pipeline.TrainBatches.__call__

  def crash_at_step_4(self, step, cls=None):
    if step == 4:
      raise KeyboardInterrupt('simulated preemption')
    return original(self, step, cls)

  monkeypatch.setattr(pipeline.TrainBatches, '__call__', crash_at_step_4)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / 'resumed'))
  monkeypatch.setattr(pipeline.TrainBatches, '__call__', original)
  train.train_and_evaluate(config, str(tmp_path / 'resumed'))

  straight, resumed = _params(tmp_path / 'straight'), _params(tmp_path / 'resumed')
  for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  for step in (3, 6):
    with open(tmp_path / 'straight' / 'eval' / f'{step}.json') as f:
      record = json.load(f)
    assert set(record) >= {'step', 'miou', 'pixel_accuracy', 'per_class_iou',
                           'confusion_matrix', 'cross_entropy', 'protocol', 'split'}
    assert 0 < record['cross_entropy'] < 10
    assert len(record['per_class_iou']) == 19 and record['step'] == step
    assert np.array(record['confusion_matrix']).shape == (19, 19)


def test_frozen_batchnorm_keeps_running_statistics(make_tiny_config):
  config = make_tiny_config({'model.freeze_bn': True})
  _, batches = _state_and_batches(config, 1)
  model = models.create_model(config, 19, train=True, axis_name=train_step.AXIS)
  tx = train_step.create_optimizer(config)
  sampler = sampling_lib.create_sampler(config, num_classes=19)
  state = train_step.initial_train_state(config, model, tx, sampler,
                                    jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  before = jax.device_get(state.batch_stats)
  step = train_step.make_train_step(config, model, tx, train_step.make_loss_fn(config, None), sampler,
                               mesh_lib.make_mesh())
  state, _, _ = step(state, batches[0])
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(state.batch_stats))):
    np.testing.assert_array_equal(a, b)


def test_tilt_warmup_ramps_t_from_zero(make_tiny_config):
  config = make_tiny_config({'loss.name': 'tce_image', 'tce.t_warmup_steps': 10,
                             'tce.t': 2.0})
  loss_fn = train_step.make_loss_fn(config, None)
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 4, 19)).astype(np.float32)
  labels = rng.integers(0, 19, (3, 4, 4))
  np.testing.assert_allclose(loss_fn(logits, labels, 0, None),
                             losses.tilted_image_loss(logits, labels, 0.0), rtol=1e-6)
  np.testing.assert_allclose(loss_fn(logits, labels, 5, None),
                             losses.tilted_image_loss(logits, labels, 1.0), rtol=1e-6)
  np.testing.assert_allclose(loss_fn(logits, labels, 50, None),
                             losses.tilted_image_loss(logits, labels, 2.0), rtol=1e-6)


@pytest.mark.parametrize('overrides', [
    {'loss.name': 'tce_class', 'sampling.name': 'tce', 'train.optimizer': 'adamw'},
    {'model.name': 'upernet', 'model.backbone': 'resnet50', 'model.output_stride': 32,
     'model.upernet_channels': 16, 'model.aux_channels': 8, 'sampling.name': 'rcs',
     'train.optimizer': 'sgd'},
])
def test_initial_state_at_optimisation_level_2_is_bit_identical(make_tiny_config, overrides):
  """initial_train_state compiles at XLA level 2 for speed: the same state, bit for bit, as the
  default compilation (threefry draws, the truncated normals, the sampler's first draws)."""
  experiment = train.build_experiment(make_tiny_config(overrides))
  fast = jax.device_get(experiment.initial_state())
  default = jax.device_get(jax.jit(functools.partial(
      train_step.create_train_state, experiment.config, experiment.model, experiment.tx,
      experiment.sampler))())
  leaves = jax.tree_util.tree_leaves_with_path(default)
  assert len(leaves) == len(jax.tree.leaves(fast)) > 50
  for (path, a), b in zip(leaves, jax.tree.leaves(fast)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
