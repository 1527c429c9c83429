"""What a study is, as data: its methods (config files plus overrides), the families its
statistics are corrected over, its ablation contrasts, its qualitative figure and the profile
its reference method must meet. A study module holds one `Study` named STUDY; the runner
(`tce_jax.studies.runner`) plans, trains, records and reports it."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping

import ml_collections


@dataclasses.dataclass(frozen=True)
class Method:
  """A method of a study: `config` names a file of tce_jax/configs (without .py), and
  `overrides` (flattened field -> value) are applied on top of it. `kind` marks the paper's
  methods apart from those added beside them; `sweep` methods run fewer seeds."""
  config: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  kind: str = 'added'  # 'paper' or 'added'
  sweep: bool = False

  def make_config(self) -> ml_collections.ConfigDict:
    config = importlib.import_module(f'tce_jax.configs.{self.config}').get_config()
    config.update_from_flattened_dict(dict(self.overrides))
    return config


def config_fields(name: str, *fields: str) -> dict[str, Any]:
  """{field: value} of `fields` in config file `name`: a study reuses a config's settings
  (e.g. the class-aware crops of the RCS config) instead of restating them."""
  config = importlib.import_module(f'tce_jax.configs.{name}').get_config()
  values = {}
  for field in fields:
    node = config
    for part in field.split('.'):
      node = node[part]
    values[field] = node
  return values


@dataclasses.dataclass(frozen=True)
class Study:
  """A study. The first method is the reference. `families` (title -> method names) are the
  tables of the summary, each corrected on its own (default: the 5-seed methods, the sweep);
  `ablations` (family title -> (question, baseline, variant) rows) the direct contrasts;
  `equivalence_margins` (statistic of analysis.summary.SUMMARY_STATS -> margin, fixed before
  the runs) adds an equivalence test of every comparison of every family;
  `sweep_series` (title -> {t: method}) the sweep figure; `qualitative` the qualitative
  figure's methods, seed, classes and image count; `fixed_classes` the classes of a second
  bottom statistic named before the scored split was seen (summary.md's sensitivity section:
  each family's comparisons on their mean IoU, with the bottom 25%'s equivalence margin);
  `profile_targets` (key -> (description, low, high, paper's value)) what the reference must
  meet, `paper_miou` the paper's mIoU beside it; `quick` adjusts a config of the smoke
  version after the tiny profile (sizes scaled to its images)."""
  name: str
  methods: Mapping[str, Method]
  ablations: Mapping[str, tuple[tuple[str, str, str], ...]] = dataclasses.field(
      default_factory=dict)
  equivalence_margins: Mapping[str, float] = dataclasses.field(default_factory=dict)
  sweep_series: Mapping[str, Mapping[float, str]] = dataclasses.field(default_factory=dict)
  qualitative_methods: tuple[str, ...] = ()
  qualitative_seed: int = 1
  qualitative_classes: tuple[str, ...] = ()
  qualitative_images: int = 4
  qualitative_title: str = ''
  fixed_classes: tuple[str, ...] = ()
  profile_targets: Mapping[str, tuple[str, Any, Any, Any]] = dataclasses.field(
      default_factory=dict)
  paper_miou: float | None = None
  quick: Callable[[ml_collections.ConfigDict], None] | None = None

  @property
  def reference(self) -> str:
    return next(iter(self.methods))

  @property
  def main_methods(self) -> list[str]:
    return [m for m, method in self.methods.items() if not method.sweep]

  @property
  def sweep(self) -> list[str]:
    return [m for m, method in self.methods.items() if method.sweep]

  def kind(self, method: str) -> str:
    """The Pareto figure's marker kind ('paper', 'added', with ' (t sweep)' for the sweep)."""
    entry = self.methods[method]
    return entry.kind + (' (t sweep)' if entry.sweep else '')
