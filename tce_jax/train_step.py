"""The train step and what it updates: the state, the optimizer, the loss of a config, and
the step itself as per-device code mapped over the mesh.

The step is per-device code, as with `pmap`: gradients and metrics are averaged with
`lax.pmean` over the mesh axis 'batch', BatchNorm statistics are synchronised through the same
axis name, and the losses complete their reductions over it, so N devices compute exactly the
global-batch loss of one device. `jax.shard_map` (with `check_vma=False`, i.e. pmap's
semantics) maps it over a 1-D mesh of all devices of all processes inside `jax.jit`. The loop
that drives it is tce_jax/train.py.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.struct
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np
import optax

from tce_jax import config_validation
from tce_jax import labels as labels_lib
from tce_jax import losses
from tce_jax import mesh as mesh_lib
from tce_jax import models
from tce_jax import sampling
from tce_jax.data import imagenet

AXIS = mesh_lib.AXIS  # the mesh axis the batch is split over
_DROPOUT_STREAM = 0  # random stream of dropout (the samplers' class draws use stream 1)


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs: model, optimizer, sampler and the loader's position."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  sampler: Any  # the sampler's state (tce_jax.sampling); {} for a stateless one
  class_queue: jax.Array  # [lag] int32: classes drawn for steps step .. step+lag-1 ([-1]: none)
  key: jax.Array  # uint32 [2] base key of dropout and class draws
  nonfinite_steps: jax.Array  # steps whose loss or gradients were not finite (skipped)


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Polynomial ("poly") decay from the base rate to 0 over the run."""
  return optax.polynomial_schedule(init_value=config.train.learning_rate, end_value=0.0,
                                   power=config.train.poly_power,
                                   transition_steps=config.train.num_steps)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The update rule of `config.train.optimizer`, on the poly learning-rate schedule.

  'sgd' (the paper's recipes): momentum, with the L2 weight decay added to the gradient
  (torch.optim.SGD style). 'adamw': Adam (beta1 = `train.momentum`, beta2 = 0.999) with the
  weight decay decoupled from the gradient (torch.optim.AdamW style), so `train.weight_decay`
  means a different thing there (typical values: 5e-4 for SGD, 1e-2 for AdamW).
  """
  parts = []
  if config.train.grad_clip_norm is not None:
    parts.append(optax.clip_by_global_norm(config.train.grad_clip_norm))
  learning_rate = create_learning_rate_fn(config)
  if config.train.optimizer == 'adamw':
    parts.append(optax.adamw(learning_rate, b1=config.train.momentum, b2=0.999,
                             weight_decay=config.train.weight_decay))
  else:
    if config.train.weight_decay:
      parts.append(optax.add_decayed_weights(config.train.weight_decay))
    parts.append(optax.sgd(learning_rate, momentum=config.train.momentum))
  return optax.chain(*parts)


def make_loss_fn(config: ml_collections.ConfigDict,
                 class_weights: np.ndarray | None) -> Callable[..., jax.Array]:
  """(logits, labels, step, axis_name) -> global batch loss of `config.loss`.

  What the loss needs comes from its `losses.LOSSES` entry: the tilt t (config.tce.t, ramped
  over config.tce.t_warmup_steps), the per-class weights (`class_weights`, computed by the
  entry's own function from the class index), and options read from config fields.
  """
  loss = losses.LOSSES[config.loss.name]
  kwargs = {arg: config_validation.value(config, field) for arg, field in loss.options.items()}
  if loss.class_weights is not None:
    kwargs[loss.weights_arg] = class_weights
  warmup = config.tce.t_warmup_steps

  def loss_fn(logits, labels, step, axis_name):
    if not loss.tilted:
      return loss(logits, labels, axis_name=axis_name, **kwargs)
    t = config.tce.t
    if warmup:
      t = t * jnp.minimum(1.0, step / warmup)
    return loss(logits, labels, t, axis_name=axis_name, **kwargs)

  return loss_fn


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, tx, loss_fn,
               sampler: sampling.Sampler, config: ml_collections.ConfigDict,
               axis_name: str = AXIS):
  """One SGD step on this device's share of the global batch (runs under shard_map).

  Returns the new state, the global-batch metrics, and the class the sampler drew for
  step + lag after its update with this batch (-1 for a sampler that draws none).
  """
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  images = imagenet.normalize(batch['image'], dtype)
  labels = batch['label'].astype(jnp.int32)
  dropout_key = jax.random.fold_in(
      jax.random.fold_in(jax.random.fold_in(state.key, _DROPOUT_STREAM), state.step),
      lax.axis_index(axis_name))

  def objective(params):
    outputs, new_vars = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                    images, train=True, rngs={'dropout': dropout_key},
                                    mutable=['batch_stats'])
    logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
    loss = loss_fn(logits, labels, state.step, axis_name)
    if aux_logits is not None:  # UPerNet's auxiliary head
      loss = loss + config.model.aux_weight * loss_fn(aux_logits, labels, state.step, axis_name)
    return loss, (logits, new_vars)

  (loss, (logits, new_vars)), grads = jax.value_and_grad(
      objective, has_aux=True)(state.params)
  grads = lax.pmean(grads, axis_name)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def unless_nonfinite(new, old):
    """With config.train.nonfinite='skip', a non-finite step changes no model state."""
    if config.train.nonfinite != 'skip':
      return new
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = unless_nonfinite(optax.apply_updates(state.params, updates), state.params)
  opt_state = unless_nonfinite(opt_state, state.opt_state)
  batch_stats = unless_nonfinite(new_vars['batch_stats'], state.batch_stats)
  nonfinite_steps = state.nonfinite_steps + jnp.where(finite, 0, 1).astype(jnp.int32)
  logits = lax.stop_gradient(logits)
  mcce = losses.cross_entropy(logits, labels, axis_name=axis_name)  # logged whatever the loss
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) & (labels != labels_lib.IGNORE_INDEX))
  valid = jnp.sum(labels != labels_lib.IGNORE_INDEX)
  metrics = {'loss': loss, 'mcce': mcce, 'grad_norm': grad_norm, 'finite': finite,
             'nonfinite_steps': nonfinite_steps,
             'pixel_accuracy': 100.0 * lax.psum(correct, axis_name) / jnp.maximum(
                 lax.psum(valid, axis_name), 1)}
  sampler_state = unless_nonfinite(sampler.update(
      state.sampler, cls=state.class_queue[0], logits=logits, labels=labels, mcce=mcce,
      axis_name=axis_name), state.sampler)
  class_queue, next_class = sampler.advance(sampler_state, state.class_queue, state.key,
                                            state.step)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, sampler=sampler_state, class_queue=class_queue,
                            nonfinite_steps=nonfinite_steps)
  return new_state, metrics, next_class


def make_train_step(config: ml_collections.ConfigDict, model, tx, loss_fn,
                    sampler: sampling.Sampler, mesh):
  """`train_step` mapped over `mesh` (state replicated, batch split), jitted, state donated."""
  step_fn = functools.partial(train_step, model=model, tx=tx, loss_fn=loss_fn, sampler=sampler,
                              config=config)
  return jax.jit(
      jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(), P(), P()),
                    check_vma=False),
      in_shardings=(NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))),
      donate_argnums=(0,))


def init_compiler_options() -> dict[str, Any] | None:
  """XLA options for compiling create_train_state: optimisation level 2 on CPU.

  That program runs once, and compiling it is mostly compiling threefry for every parameter
  tensor: level 2 compiles it several times faster than XLA:CPU's default level 3 and gives
  the same state bit for bit (tests/test_train.py checks it on several models and samplers;
  level 0 does not). Other backends keep their defaults (docs/performance.md)."""
  return {'xla_backend_optimization_level': 2} if jax.default_backend() == 'cpu' else None


def create_train_state(config: ml_collections.ConfigDict, model, tx,
                       sampler: sampling.Sampler) -> TrainState:
  """Initial parameters, optimizer and sampler state (with its first `lag` draws)."""
  key = jax.random.PRNGKey(config.seed)
  variables = models.init_variables(config, model, key)
  params = variables['params']
  sampler_state = sampler.init()
  return TrainState(step=jnp.int32(0), params=params, batch_stats=variables['batch_stats'],
                    opt_state=tx.init(params), sampler=sampler_state,
                    class_queue=sampler.initial_queue(sampler_state, key), key=key,
                    nonfinite_steps=jnp.int32(0))


def initial_train_state(config: ml_collections.ConfigDict, model, tx, sampler: sampling.Sampler,
                        sharding: jax.sharding.Sharding) -> TrainState:
  """create_train_state compiled with init_compiler_options(), its output laid out as
  `sharding`."""
  init = jax.jit(functools.partial(create_train_state, config, model, tx, sampler),
                 out_shardings=sharding)
  return init.lower().compile(init_compiler_options())()


def model_variables(state: TrainState) -> dict:
  """The variables evaluation and inference need: {'params', 'batch_stats'}."""
  return {'params': state.params, 'batch_stats': state.batch_stats}
