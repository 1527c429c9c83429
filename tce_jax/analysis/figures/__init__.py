"""The report's built-in figures, one module each, registered in `analysis.registry` in the
order a report draws them."""

from tce_jax.analysis.figures import bars  # noqa: F401  (registers 'bars')
from tce_jax.analysis.figures import class_differences  # noqa: F401
from tce_jax.analysis.figures import pareto  # noqa: F401
from tce_jax.analysis.figures import confusion  # noqa: F401
from tce_jax.analysis.figures import qualitative  # noqa: F401
from tce_jax.analysis.figures import sweep  # noqa: F401  (not drawn by default)
