"""Stochastic TCE (the paper's Algorithm 1) in your own Flax + optax training loop.

  python examples/stochastic_tce.py

The sampler's state lives in your jitted step next to the parameters: the step updates it
with the batch's loss and draws the class of the batch `lag` steps ahead; your loader reads
that class and fetches images of D_c. Only `tce_jax.sampling`, the class index and the loss
come from tce-jax (docs/use_in_your_code.md).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tce_jax import losses
from tce_jax import sampling
from tce_jax.data.class_index import ClassIndex
import toy_segmentation as toy

STEPS, LAG, T = 80, 2, 1.0


def main() -> dict:
  images, labels = toy.make_data()
  index = ClassIndex.from_label_maps(labels, toy.NUM_CLASSES)  # D_c of every class
  sampler = sampling.TCESampler(num_classes=toy.NUM_CLASSES, class_index=index, t=T, lag=LAG)
  net, tx = toy.Net(), toy.optimizer()
  base_key = jax.random.PRNGKey(0)
  params = net.init(base_key, jnp.asarray(images[:1]))
  opt_state = tx.init(params)
  sampler_state = sampler.init()
  queue = sampler.initial_queue(sampler_state, base_key)  # the classes of steps 0 .. LAG - 1

  @jax.jit
  def train_step(params, opt_state, sampler_state, queue, step, x, y):
    def loss_fn(p):
      logits = net.apply(p, x)
      return losses.cross_entropy(logits, y), logits
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    params = optax.apply_updates(params, updates)
    # The batch was drawn from D_queue[0]: its loss updates that class's tilted average.
    sampler_state = sampler.update(sampler_state, cls=queue[0], logits=jax.lax.stop_gradient(
        logits), labels=y, mcce=loss, axis_name=None)
    queue, _ = sampler.advance(sampler_state, queue, base_key, step)  # draws step + LAG
    return params, opt_state, sampler_state, queue, loss

  rng = np.random.default_rng(0)
  used, states, losses_seen = [], [], []
  for step in range(STEPS):
    c = int(queue[0])  # drawn LAG steps ago: the loader could have fetched it meanwhile
    batch = toy.batch_of_class(index.members(c), rng)
    params, opt_state, sampler_state, queue, loss = train_step(
        params, opt_state, sampler_state, queue, jnp.int32(step), images[batch], labels[batch])
    used.append(c)
    states.append(sampler_state)
    losses_seen.append(float(loss))

  # Checks: every class after the first LAG steps is the draw of the state LAG steps before,
  # with that step's key; every step updated the state once; every batch held its class.
  for step in range(LAG, STEPS):
    expected = sampler.draw(states[step - LAG], sampling.draw_key(base_key, step))
    assert used[step] == int(expected), (step, used[step], int(expected))
  counts = np.asarray(sampler_state.draw_counts)
  assert counts.sum() == STEPS and np.array_equal(counts, np.bincount(used, minlength=4))
  probabilities = np.asarray(sampling.draw_probabilities(sampler_state))
  iou = toy.class_iou(np.asarray(net.apply(params, jnp.asarray(images))), labels)
  print(f'Stochastic TCE, t = {T}, lag {LAG}: {STEPS} steps, loss {losses_seen[0]:.3f} -> '
        f'{losses_seen[-1]:.3f}')
  print(f'  images per class (|D_c|): {index.image_counts.tolist()}')
  print(f'  batches drawn per class:  {counts.tolist()}')
  print(f'  next draw probabilities:  {[round(float(p), 3) for p in probabilities]}')
  print(f'  IoU per class (train images): {np.round(iou, 1).tolist()}')
  print('  checked: each class is the sampler\'s draw LAG steps earlier; state updated '
        'every step')
  return {'used': used, 'draw_counts': counts, 'probabilities': probabilities,
          'losses': losses_seen, 'iou': iou}


if __name__ == '__main__':
  main()
