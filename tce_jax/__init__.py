"""tce-jax: Tilted Cross-Entropy (TCE) for fair semantic segmentation, in JAX / Flax."""

from tce_jax import xla_flags as _xla_flags

_xla_flags.add_cpu_flags()  # before JAX starts a backend (see tce_jax/xla_flags.py)
