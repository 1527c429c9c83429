"""Studies as data: each module of this package (other than `spec` and `runner`) defines one
`Study` named STUDY; `load(name)` finds it, so adding a study is adding a file. The runner
(`tce_jax.studies.runner`) trains, records and reports it; `scripts/experiment.py` is its
command line."""

from __future__ import annotations

import importlib
import os

from tce_jax.studies.spec import Method, Study  # noqa: F401  (the study files' vocabulary)

_NOT_STUDIES = ('__init__', 'spec', 'runner')


def available() -> list[str]:
  """The names of the study modules of this package."""
  folder = os.path.dirname(os.path.abspath(__file__))
  return sorted(n[:-3] for n in os.listdir(folder)
                if n.endswith('.py') and n[:-3] not in _NOT_STUDIES)


def load(name: str) -> Study:
  """The STUDY of module tce_jax.studies.<name>; ValueError naming the studies otherwise."""
  if name not in available():
    raise ValueError(f'No study {name!r}; studies: {", ".join(available())}')
  study = getattr(importlib.import_module(f'tce_jax.studies.{name}'), 'STUDY', None)
  if not isinstance(study, Study):
    raise ValueError(f'tce_jax/studies/{name}.py defines no STUDY = Study(...)')
  return study
