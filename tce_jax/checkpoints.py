"""Checkpoints of a run (WORKDIR/checkpoints, orbax): opening, saving and the one restore.

Training restores the whole TrainState; evaluation restores only the model variables (a
partial restore of 'params' and 'batch_stats'), so it needs neither the optimizer, the
sampler nor the training data. Both go through `restore`, with the same error messages.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import orbax.checkpoint as ocp

PyTree = Any


def directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


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
  if partial:
    args = ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)
  else:
    args = ocp.args.StandardRestore(target)
  try:
    return checkpoints.restore(step, args=args)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f'The checkpoint of step {step} in {where} does not fit this config (another model, '
        f'backbone, width, number of classes or sampler?): {e}') from e


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
    raise OSError(f'Writing a checkpoint (up to step {step}) in {checkpoints.directory} '
                  f'failed: {e}. Complete checkpoints: {checkpoints.all_steps()}.') from e
