"""tce-jax: Tilted Cross-Entropy (TCE) for fair semantic segmentation, in JAX / Flax."""

import os as _os

from tce_jax import xla_flags as _xla_flags

_xla_flags.add_cpu_flags()  # before JAX starts a backend (see tce_jax/xla_flags.py)

# TensorFlow (TensorBoard files, tfds) is imported by tce_jax's modules; on CPUs where it turns
# its oneDNN kernels on by default (e.g. AVX-512 VNNI / BF16) it prints a notice on stderr at
# every import whatever TF_CPP_MIN_LOG_LEVEL says, so every command's output (and a one-line
# error) would open with TensorFlow's log lines. None of tce_jax's math runs in TensorFlow
# (JAX computes; TensorFlow writes summaries and reads records), so its oneDNN kernels are off
# and its C++ INFO logs hidden, unless the caller set either variable.
_os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
_os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
