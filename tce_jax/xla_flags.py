"""XLA:CPU flags measured to make our train step faster (docs/performance.md).

`tce_jax` appends them to XLA_FLAGS when it is imported, i.e. before JAX starts a backend
(XLA reads the variable then; imported later, they have no effect). A flag already in
XLA_FLAGS is left as the user set it, `TCE_JAX_KEEP_XLA_FLAGS=1` leaves XLA_FLAGS untouched,
and nothing is added for jaxlib versions these were not measured on (an unknown flag would
stop XLA). They apply to the CPU backend only.
"""

from __future__ import annotations

from importlib import metadata
import os
from typing import MutableMapping

# Convolutions on XLA's own (Eigen) kernels instead of YNNPACK's; YNNPACK keeps the dots,
# reductions and elementwise fusions it takes by default. With jaxlib 0.10.2 on this project's
# 2-core machine: train step -24% for the ResNet-18 DeepLabv3+ of the synthetic configs
# (128 x 128, batch 8) and -35% for the ResNet-101 one (256 x 256, batch 2), evaluation +20%
# images/s (scripts/benchmark.py; docs/performance.md).
CPU_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': '-individual_convolution'}
MEASURED_JAXLIB = ('0.10.',)  # version prefixes the flags exist in and were measured on
OPT_OUT = 'TCE_JAX_KEEP_XLA_FLAGS'


def add_cpu_flags(environ: MutableMapping[str, str] = os.environ,
                  jaxlib_version: str | None = None) -> list[str]:
  """Appends the missing CPU_FLAGS to environ['XLA_FLAGS']; returns the flags added."""
  if environ.get(OPT_OUT, '') not in ('', '0'):
    return []
  if jaxlib_version is None:
    try:
      jaxlib_version = metadata.version('jaxlib')
    except metadata.PackageNotFoundError:
      return []
  if not jaxlib_version.startswith(MEASURED_JAXLIB):
    return []
  current = environ.get('XLA_FLAGS', '')
  added = [f'--{name}={value}' for name, value in CPU_FLAGS.items()
           if f'--{name}=' not in current]
  if added:
    environ['XLA_FLAGS'] = ' '.join([current.strip(), *added]).strip()
  return added
