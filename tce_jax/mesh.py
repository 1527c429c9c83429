"""The device mesh training and evaluation share: one axis, 'batch', over every device of
every process (data parallelism; `jax.shard_map` splits each global batch along it)."""

from __future__ import annotations

import jax
import numpy as np

AXIS = 'batch'  # the mesh axis the batch is split over


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh, axis AXIS, over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(np.asarray(devices), (AXIS,),
                           axis_types=(jax.sharding.AxisType.Auto,))
