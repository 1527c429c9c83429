"""The registry of report figures: a figure is a function registered under a name.

Every figure has one signature, `draw(runs, report, out, options) -> None`: `runs` the loaded
runs (`analysis.runs.load_runs`), `report` the aggregated report dict (report.json), `out`
the folder it writes its PNG and PDF into, `options` a mapping of its own settings (may be
empty). `make_report` draws the figures registered with `default=True`, in registration
order, and any others it is asked for by name; adding a figure is one module that calls
`register`, nothing else.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

Figure = Callable[[list, dict, str, Mapping[str, Any]], None]
FIGURES: dict[str, Figure] = {}
DEFAULT: list[str] = []  # drawn by every report, in this order


def register(name: str, *, default: bool = True) -> Callable[[Figure], Figure]:
  """Decorator: registers `draw` as figure `name` (replacing one of that name)."""

  def wrap(draw: Figure) -> Figure:
    FIGURES[name] = draw
    if default and name not in DEFAULT:
      DEFAULT.append(name)
    if not default and name in DEFAULT:
      DEFAULT.remove(name)
    return draw

  return wrap
