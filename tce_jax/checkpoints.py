"""Checkpoints of a run (WORKDIR/checkpoints, orbax): opening, saving and the one restore.

Training restores the whole TrainState; evaluation restores only the model variables (a
partial restore of 'params' and 'batch_stats'), so it needs neither the optimizer, the
sampler nor the training data. Both go through `restore`, with the same error messages.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

from absl import logging
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from tce_jax import rundir

PyTree = Any
ITEM = 'default'  # the name orbax gives the single item of a checkpoint


class CheckpointCorruptError(ValueError):
  """A checkpoint whose files cannot be read (truncated, deleted, garbage)."""


def directory(workdir: str) -> str:
  return rundir.checkpoints_dir(workdir)


def manager(workdir: str, *, max_to_keep: int | None = None,
            create: bool = False) -> ocp.CheckpointManager:
  """The CheckpointManager of a run's checkpoints (temporary leftovers are cleaned up)."""
  return ocp.CheckpointManager(
      directory(workdir),
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                           cleanup_tmp_directories=create))


def restore(checkpoints: ocp.CheckpointManager, step: int | None, target: PyTree, *,
            partial: bool = False) -> PyTree:
  """Checkpoint `step` (None: the latest) restored into the structure and shardings of
  `target` (arrays or jax.ShapeDtypeStruct). With `partial`, `target` holds only some of the
  saved top-level entries (e.g. the model variables) and only those are read.

  Raises FileNotFoundError when there is no checkpoint, ValueError naming the steps present
  when `step` is not one, and ValueError saying what may differ when the checkpoint does not
  fit `target`.
  """
  steps = checkpoints.all_steps()
  where = checkpoints.directory
  if not steps:
    raise FileNotFoundError(f'No checkpoint in {where}')
  step = max(steps) if step is None else step
  if step not in steps:
    raise ValueError(f'--checkpoint_step={step}: {where} has steps {sorted(steps)}')
  problem = _mismatch(checkpoints, step, target, partial=partial)
  if problem:
    raise ValueError(
        f'The checkpoint of step {step} in {where} does not fit this config (another model, '
        f'backbone, width, number of classes or sampler?): {problem}')
  if partial:
    args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)
  else:
    args = ocp.args.StandardRestore(target)
  try:
    return checkpoints.restore(step, args=args)
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    raise CheckpointCorruptError(
        f'The checkpoint of step {step} in {where} cannot be read (its files are damaged: '
        f'{_reason(e)})') from e


def _reason(error: Exception) -> str:
  """An orbax / TensorStore error as one short line (their messages carry whole specs)."""
  text = ' '.join(f'{type(error).__name__}: {error}'.split())
  text = text.split(' See full TensorStore details')[0]
  return text if len(text) <= 160 else text[:157] + '...'


def _leaf_shapes(tree: PyTree) -> dict[tuple[str, ...], tuple[int, ...]]:
  """Path (names and indices as strings) -> shape, for the leaves that have a shape."""
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if hasattr(leaf, 'shape'):
      key = tuple(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)
      shapes[key] = tuple(leaf.shape)
  return shapes


def _saved_shapes(checkpoints: ocp.CheckpointManager, step: int) -> dict[tuple, tuple]:
  """Path of each saved array -> its (global) shape, from the checkpoint's own metadata;
  CheckpointCorruptError when that cannot be read."""
  # The item's own handler reads only the item's metadata; a Checkpointer would also look
  # for step metadata inside the item folder and warn that it is missing.
  handler = ocp.PyTreeCheckpointHandler()
  try:
    metadata = handler.metadata(checkpoints.directory / str(step) / ITEM)
    tree = getattr(getattr(metadata, 'item_metadata', metadata), 'tree', None)
    if tree is None:
      raise ValueError('no tree in the metadata')
    return _leaf_shapes(tree)
  except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
    raise CheckpointCorruptError(
        f'The checkpoint of step {step} in {checkpoints.directory} cannot be read (its '
        f'metadata: {_reason(e)})') from e
  finally:
    handler.close()


def _mismatch(checkpoints: ocp.CheckpointManager, step: int, target: PyTree, *,
              partial: bool) -> str:
  """'' when the checkpoint holds `target`'s arrays with their shapes; else what differs."""
  saved = _saved_shapes(checkpoints, step)
  wanted = _leaf_shapes(ocp.tree.serialize_tree(target, keep_empty_nodes=True))
  missing = sorted(set(wanted) - set(saved))
  extra = [] if partial else sorted(set(saved) - set(wanted))
  shapes = sorted(k for k in set(wanted) & set(saved) if wanted[k] != saved[k])
  problems = []
  for name, keys in (('missing', missing), ('unexpected', extra)):
    if keys:
      problems.append(f'{len(keys)} {name} arrays (e.g. {"/".join(keys[0])})')
  if shapes:
    k = shapes[0]
    problems.append(f'{len(shapes)} arrays of another shape (e.g. {"/".join(k)}: '
                    f'saved {saved[k]}, expected {wanted[k]})')
  return '; '.join(problems)


def restore_latest(checkpoints: ocp.CheckpointManager, target: PyTree) -> PyTree | None:
  """The newest checkpoint that restores into `target` (None when there is none).

  A damaged checkpoint is logged in one line (which step, why, where it moved), moved aside
  (renamed to `corrupt-<step>-<time>`, never deleted) and the next older one is tried; a
  checkpoint that does not fit the config is an error (an older one would not fit either).
  When every checkpoint was damaged, CheckpointCorruptError says where they went and how to
  start over.
  """
  moved = []
  for step in sorted(checkpoints.all_steps(), reverse=True):
    try:
      return restore(checkpoints, step, target)
    except CheckpointCorruptError as e:
      aside = _move_aside(checkpoints, step)
      logging.warning('%s; moved it to %s and trying an older checkpoint.', e, aside)
      moved.append(aside)
  if moved:
    raise CheckpointCorruptError(
        f'No checkpoint in {checkpoints.directory} could be restored: the damaged ones were '
        f'moved to {", ".join(moved)}. The run\'s records (config.json, config_history/, '
        'eval/) are kept. To train this run again from step 0, pass --restart_from_scratch '
        '(its records move to WORKDIR/previous-<time>/ first), or use another --workdir.')
  return None


def _move_aside(checkpoints: ocp.CheckpointManager, step: int) -> str:
  """Renames a damaged step directory so that orbax no longer lists it (and a new save of
  that step does not collide with it); returns its new path."""
  folder = os.fspath(checkpoints.directory)
  aside = rundir.damaged_checkpoint_path(os.path.dirname(folder), step,
                                         time.strftime('%Y%m%d-%H%M%S'))
  if jax.process_index() == 0:
    os.rename(os.path.join(folder, str(step)), aside)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'damaged checkpoint {step} moved aside')
  checkpoints.reload()
  return aside


def save(checkpoints: ocp.CheckpointManager, step: int, state: PyTree) -> None:
  """Saves `state` as checkpoint `step` (asynchronously; see `saving`)."""
  saving(checkpoints, step, lambda: checkpoints.save(step, args=ocp.args.StandardSave(state)))


def saving(checkpoints: ocp.CheckpointManager, step: int, action: Callable[[], Any]) -> None:
  """Runs a checkpoint save (or waits for one); a failure (disk full, ...) names the place and
  the complete checkpoints. A failed save is left in orbax's temporary directory, which is
  never taken for a checkpoint and is removed at the next start."""
  try:
    action()
  except Exception as e:  # pylint: disable=broad-except
    full = 'No space left on device' in str(e)
    reason = ('the disk is full (No space left on device); free space (docs/reliability.md: '
              'lower --config.train.keep_checkpoints, which prunes older checkpoints at the '
              'next start) and run the same command again to resume' if full else _reason(e))
    raise OSError(f'Writing a checkpoint (up to step {step}) in {checkpoints.directory} '
                  f'failed: {reason}. Complete checkpoints: {checkpoints.all_steps()}.') from e


def prune(checkpoints: ocp.CheckpointManager, keep: int) -> list[int]:
  """Deletes all but the newest `keep` checkpoints (orbax prunes only after a successful
  save, so a run restarted with a lower `train.keep_checkpoints` on a full disk would free
  nothing); returns the steps deleted."""
  steps = sorted(checkpoints.all_steps())
  old = steps[:-keep] if keep > 0 else []
  for step in old:
    checkpoints.delete(step)
  if old:
    logging.info('Deleted the checkpoints of steps %s (train.keep_checkpoints=%d).', old, keep)
  return old
