"""The interface every batch-composition strategy (sampler) implements.

A sampler decides which images make up each training step's batch. It owns everything that
is specific to it: its state (a pytree kept in the TrainState and checkpointed), the update of
that state inside the jitted train step, the draw of the class whose images (D_c) form the
batch of step k + lag, the classes of the first `lag` steps, its random keys, whether it needs
the class index, how it checks its config fields, and its TensorBoard scalars. The training
loop only calls these methods, so a new sampler is a new class registered in
`tce_jax.sampling.SAMPLERS`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

PyTree = Any
_SAMPLER_STREAM = 1  # the random stream of class draws (stream 0 is the dropout's)
NO_CLASS = -1  # the queue entry of a sampler that draws no class


def draw_key(base_key: jax.Array, step) -> jax.Array:
  """The key of the class draw for `step`: the same on every device and process."""
  return jax.random.fold_in(jax.random.fold_in(base_key, _SAMPLER_STREAM), step)


class Sampler:
  """Base class: a sampler that draws no class (the batches are shuffled epochs).

  Class-conditional samplers set `class_conditional = True` and implement `draw`; the batch of
  step k is then drawn from D_c, c drawn on the device right after step k - lag, which lets
  the host load that batch while the device runs the steps in between. A sampler is built
  from plain arguments (its number of classes, the training split's `ClassIndex` when
  `needs_class_index`, `lag`, and its own hyperparameters as keyword arguments), so it works
  in any training loop (docs/use_in_your_code.md); `from_config` builds it from this
  project's config (its `config_kwargs` read the sampler's own fields).
  """

  name: ClassVar[str]
  class_conditional: ClassVar[bool] = False
  needs_class_index: ClassVar[bool] = False

  def __init__(self, *, num_classes: int, class_index=None, lag: int = 1):
    if self.needs_class_index and class_index is None:
      raise ValueError(f'The {self.name!r} sampler needs the class index of the train split')
    if class_index is not None and class_index.num_classes != num_classes:
      raise ValueError(f'The class index has {class_index.num_classes} classes, the sampler '
                       f'{num_classes}')
    if self.class_conditional and (not isinstance(lag, int) or lag < 1):
      raise ValueError(f'lag={lag!r}: a class-conditional sampler draws at least 1 step ahead')
    self.num_classes, self.class_index, self._lag = num_classes, class_index, lag

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, *, num_classes: int,
                  class_index=None) -> Sampler:
    """The sampler `config` describes (config.sampling.lag and `config_kwargs`)."""
    return cls(num_classes=num_classes, class_index=class_index,
               lag=int(config.sampling.lag), **cls.config_kwargs(config))

  @classmethod
  def config_kwargs(cls, config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The constructor's hyperparameters read from `config` (none by default)."""
    del config
    return {}

  @classmethod
  def check_config(cls, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming an invalid field this sampler reads (none by default)."""

  @property
  def available(self) -> np.ndarray:
    """[K] bool: the classes with a non-empty D_c (all, without a class index)."""
    if self.class_index is None:
      return np.ones((self.num_classes,), bool)
    return np.asarray(self.class_index.available, bool)

  @property
  def lag(self) -> int:
    """Steps between a class draw and the step that uses it (0: no class is drawn)."""
    return self._lag if self.class_conditional else 0

  # --- State, update and draws (pure, jit-able) ---

  def init(self) -> PyTree:
    """The initial state (a pytree of arrays; {} when stateless)."""
    return {}

  def update(self, state: PyTree, *, cls: jax.Array, logits: jax.Array, labels: jax.Array,
             mcce: jax.Array, axis_name: str | None) -> PyTree:
    """The state after the step that trained on a batch drawn from D_cls (inside the step).

    `logits` [b, h, w, K] (no gradient) and `labels` [b, h, w] are this device's share of the
    batch; `mcce` is the global batch's mean cross-entropy. Global reductions use
    `axis_name`, so N devices update exactly as one.
    """
    del cls, logits, labels, mcce, axis_name
    return state

  def draw(self, state: PyTree, key: jax.Array) -> jax.Array:
    """The class (int32 scalar) whose images form a future batch."""
    raise NotImplementedError(f'{type(self).__name__} draws no class')

  def initial_queue(self, state: PyTree, base_key: jax.Array) -> jax.Array:
    """[max(lag, 1)] int32: the classes of steps 0 .. lag - 1 ([NO_CLASS] when none)."""
    if not self.class_conditional:
      return jnp.full((1,), NO_CLASS, jnp.int32)  # orbax cannot save an empty array
    return jnp.stack([self.draw(state, draw_key(base_key, s)) for s in range(self.lag)])

  def advance(self, state: PyTree, queue: jax.Array, base_key: jax.Array,
              step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """After `step` (with `state` already updated): draws the class of step + lag and shifts
    the queue. Returns (new queue, class drawn; NO_CLASS when none)."""
    if not self.class_conditional:
      return queue, jnp.int32(NO_CLASS)
    next_class = self.draw(state, draw_key(base_key, step + queue.shape[0]))
    return jnp.concatenate([queue[1:], next_class[None]]), next_class

  # --- Logging (host side) ---

  def scalars(self, state: PyTree, class_names: Sequence[str]) -> dict[str, float]:
    """Per-class TensorBoard scalars of the (host-fetched) state; none by default."""
    del state, class_names
    return {}
