"""Rare class sampling (DAFormer) in your own Flax + optax training loop.

  python examples/rare_class_sampling.py

The class of each batch is drawn with p(c) = softmax((1 - f_c) / T) from the training pixel
frequencies f_c, and the batch from D_c, DAFormer's images with more than `MIN_PIXELS` pixels
of c. The probabilities are fixed, so the sampler's state only counts the draws; the draw
still happens inside your jitted step, `lag` steps ahead (docs/use_in_your_code.md).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import stats

from tce_jax import losses
from tce_jax import sampling
from tce_jax.data.class_index import ClassIndex
import toy_segmentation as toy

STEPS, LAG, TEMPERATURE, MIN_PIXELS = 80, 1, 0.01, 8


def main() -> dict:
  images, labels = toy.make_data()
  index = ClassIndex.from_label_maps(labels, toy.NUM_CLASSES).with_min_pixels(MIN_PIXELS)
  sampler = sampling.RareClassSampler(num_classes=toy.NUM_CLASSES, class_index=index,
                                      temperature=TEMPERATURE, lag=LAG)
  net, tx = toy.Net(), toy.optimizer()
  base_key = jax.random.PRNGKey(1)
  params = net.init(base_key, jnp.asarray(images[:1]))
  opt_state = tx.init(params)
  sampler_state = sampler.init()
  queue = sampler.initial_queue(sampler_state, base_key)

  @jax.jit
  def train_step(params, opt_state, sampler_state, queue, step, x, y):
    def loss_fn(p):
      return losses.cross_entropy(net.apply(p, x), y)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    params = optax.apply_updates(params, updates)
    sampler_state = sampler.update(sampler_state, cls=queue[0], logits=None, labels=y,
                                   mcce=loss, axis_name=None)
    queue, _ = sampler.advance(sampler_state, queue, base_key, step)
    return params, opt_state, sampler_state, queue, loss

  rng = np.random.default_rng(1)
  used, losses_seen = [], []
  for step in range(STEPS):
    c = int(queue[0])
    batch = toy.batch_of_class(index.members(c), rng)
    assert np.all(np.sum(labels[batch] == c, axis=(1, 2)) > MIN_PIXELS)  # DAFormer's D_c
    params, opt_state, sampler_state, queue, loss = train_step(
        params, opt_state, sampler_state, queue, jnp.int32(step), images[batch], labels[batch])
    used.append(c)
    losses_seen.append(float(loss))

  # Checks: the state counted every draw; the draws follow the sampler's probabilities (the
  # run's own draws, and 20,000 draws of the same program, against p with a chi-square test).
  counts = np.asarray(sampler_state['draw_counts'])
  assert np.array_equal(counts, np.bincount(used, minlength=toy.NUM_CLASSES))
  p = sampler.probabilities
  keys = jax.random.split(jax.random.PRNGKey(2), 20_000)
  draws = np.asarray(jax.jit(jax.vmap(lambda k: sampler.draw(sampler_state, k)))(keys))
  observed = np.bincount(draws, minlength=toy.NUM_CLASSES)
  drawable = p > 1e-9  # the background (95% of the pixels) has p ~ 1e-40
  p_value = stats.chisquare(observed[drawable], 20_000 * p[drawable]).pvalue
  assert p_value > 1e-3 and not observed[~drawable].any(), (observed, p)
  iou = toy.class_iou(np.asarray(net.apply(params, jnp.asarray(images))), labels)
  print(f'Rare class sampling, T = {TEMPERATURE}, D_c: > {MIN_PIXELS} pixels of c: {STEPS} '
        f'steps, loss {losses_seen[0]:.3f} -> {losses_seen[-1]:.3f}')
  print(f'  pixels per class:        {index.pixel_counts.tolist()}')
  print(f'  draw probabilities:      {[round(float(q), 3) for q in p]}')
  print(f'  batches drawn per class: {counts.tolist()}')
  print(f'  IoU per class (train images): {np.round(iou, 1).tolist()}')
  print(f'  checked: 20,000 draws follow the probabilities (chi-square p = {p_value:.2f}); '
        'state counted every draw')
  return {'used': used, 'draw_counts': counts, 'probabilities': p, 'p_value': p_value,
          'losses': losses_seen, 'iou': iou}


if __name__ == '__main__':
  main()
