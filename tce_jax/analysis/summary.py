"""A study's summary tables (summary.md), built on `tce_jax.stats`: per family of methods each
one's headline statistics against the reference, and the ablation contrasts, with Welch's
test, 95% intervals, Holm's correction over each declared family and per-class counts; with
equivalence margins, each family's two one-sided tests and the verdict each comparison
supports (differs, equivalent, or inconclusive)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tce_jax import stats
from tce_jax.analysis.runs import FIXED_BOTTOM

SUMMARY_STATS = {'miou': 'mIoU', 'sorted_bottom': 'bottom 25% (MCCE\'s worst classes)',
                 'percentile_bottom_miou': 'own bottom 25%', 'worst': 'worst class',
                 'std': 'class-IoU std'}
ALPHA = stats.ALPHA  # significance level after Holm's correction


def _welch(entry: dict, reference: dict, n: int, n_ref: int) -> dict:
  return stats.welch(entry['mean'], entry['std'], n, reference['mean'], reference['std'], n_ref)


def _mean_std(value: dict) -> str:
  """'mean ± std' of a statistic over seeds; the mean alone for one seed (std None)."""
  return f"{value['mean']:.1f}" + ('' if value['std'] is None else f" ± {value['std']:.1f}")


def _interval(c: dict) -> str:
  if not np.isfinite(c['low']):
    return f"{c['diff']:+.1f}"
  return f"{c['diff']:+.1f} [{c['low']:+.1f}, {c['high']:+.1f}]"


def summary(report_json: dict, families: dict[str, list[str]] | None = None,
            margins: dict[str, float] | None = None) -> str:
  """Markdown: per family of methods, each method's headline statistics (mean +- std over
  seeds) and their difference to the reference with a 95% confidence interval; bold where
  Welch's test is significant at ALPHA after Holm's correction over the family's table (every
  method x statistic); then the adjusted p-values, and per method the classes better / worse
  than the reference after Holm over the classes; with `margins` (statistic -> margin), the
  family's equivalence table (`equivalence_table`). `families` (title -> labels) defaults to
  one family of every label."""
  labels, reference = report_json['labels'], report_json['reference']
  if families is None:
    families = {'': [l for l in labels if l != reference]}
  sections = []
  for title, members in families.items():
    members = [m for m in members if m in labels and m != reference]
    tests, adjusted, tested = _family(labels, [(m, reference) for m in members])
    class_counts, class_tests = _class_counts(labels, [(m, reference) for m in members])
    lines = ([f'### {title}', ''] if title else []) + [
        '| method | runs | ' + ' | '.join(SUMMARY_STATS.values()) +
        f' | classes better / worse than {reference} |', '|---|---|' +
        '---|' * (len(SUMMARY_STATS) + 1)]
    for label in [reference] + members:
      entry, n = labels[label], len(labels[label]['runs'])
      cells = []
      for key in SUMMARY_STATS:
        value = entry['fairness'][key]
        cell = _mean_std(value)
        if label != reference:
          cell += f' ({_interval(tests[label, reference][key])})'
          if adjusted[(label, reference), key] <= ALPHA:
            cell = f'**{cell}**'
        cells.append(cell)
      counts = '' if label == reference else class_counts[label, reference]
      lines.append(f'| {label} | {n} | ' + ' | '.join(cells) + f' | {counts} |')
    lines += ['', f'Mean ± sample std over seeds; in brackets the difference to {reference} '
              "and its 95% confidence interval (Welch). **Bold**: Welch's two-sided test "
              f'significant at {ALPHA} after Holm\'s correction over the {tested} comparisons '
              'of this table (adjusted p-values below). Classes better / worse: per class, '
              f'Welch against {reference}, Holm over the classes of each method, at {ALPHA}; '
              f'in brackets, Holm over all {class_tests} per-class tests of this table.', '',
              '| method | ' + ' | '.join(f'p ({v})' for v in SUMMARY_STATS.values()) + ' |',
              '|---|' + '---|' * len(SUMMARY_STATS)]
    for label in members:
      lines.append(f'| {label} | ' + _p_cells(adjusted, (label, reference)) + ' |')
    if margins and members:
      lines += ['', equivalence_table(labels, [(m, reference) for m in members], margins,
                                      tests, adjusted)]
    sections.append('\n'.join(lines))
  return '\n\n'.join(sections)


def _family(labels: dict, pairs: list[tuple[str, str]],
            keys: Sequence[str] = tuple(SUMMARY_STATS)) -> tuple[dict, dict, int]:
  """Welch's comparison of each (variant, baseline) pair on every statistic of `keys`, and
  the p-values adjusted by Holm over the whole family (pairs x statistics). Returns
  (tests[pair][statistic], adjusted[pair, statistic], the number of comparisons tested)."""
  tests = {(v, b): {k: _welch(labels[v]['fairness'][k], labels[b]['fairness'][k],
                              len(labels[v]['runs']), len(labels[b]['runs']))
                    for k in keys} for v, b in pairs}
  flat = [(pair, k) for pair in tests for k in keys]
  adjusted = dict(zip(flat, stats.holm([tests[pair][k]['p'] for pair, k in flat])))
  return tests, adjusted, int(sum(np.isfinite(p) for p in adjusted.values()))


def _class_counts(labels: dict, pairs: list[tuple[str, str]]) -> tuple[dict[tuple, str], int]:
  """Per (variant, baseline) pair, 'better / worse (better / worse)': the classes that differ
  at ALPHA after Holm over the pair's classes, and in brackets after Holm over every
  per-class test of all the pairs; and the number of those tests."""
  tests = {(v, b): stats.per_class(labels[v], labels[b], len(labels[v]['runs']),
                                   len(labels[b]['runs'])) for v, b in pairs}
  flat = [(pair, c) for pair in tests for c in tests[pair]]
  table = dict(zip(flat, stats.holm([tests[pair][c]['p'] for pair, c in flat])))
  counts = {}
  for pair, classes in tests.items():
    better, worse = stats.beyond_noise(classes, ALPHA)
    table_better = sum(bool(table[pair, c] <= ALPHA and t['diff'] > 0) for c, t in classes.items())
    table_worse = sum(bool(table[pair, c] <= ALPHA and t['diff'] < 0) for c, t in classes.items())
    counts[pair] = f'{better} / {worse} ({table_better} / {table_worse})'
  return counts, int(sum(np.isfinite(p) for p in table.values()))


def _p_cell(p: float) -> str:
  """A p-value as the tables print it: 3 significant digits; '-' where none was tested."""
  return '-' if not np.isfinite(p) else f'{p:.3g}'


def _p_cells(adjusted: dict, pair: tuple[str, str]) -> str:
  return ' | '.join(_p_cell(adjusted[pair, k]) for k in SUMMARY_STATS)


def ablations(report_json: dict, families: dict[str, list[tuple[str, str, str]]],
              margins: dict[str, float] | None = None) -> str:
  """Markdown: per family of ablations (title -> (question, baseline, variant) rows), the
  difference variant - baseline in each headline statistic with its 95% confidence interval
  (Welch); bold where Welch's test is significant at ALPHA after Holm's correction over the
  family's table (rows x statistics); the adjusted p-values; per row the classes better /
  worse in the variant than in the baseline (Holm over the classes). A row whose methods are
  not both in the report is left out, and a family without rows altogether; '' if none. With
  `margins`, each family's equivalence table (`equivalence_table`)."""
  labels = report_json['labels']
  sections = []
  for title, rows in families.items():
    rows = [(q, b, v) for q, b, v in rows if b in labels and v in labels]
    if not rows:
      continue
    tests, adjusted, tested = _family(labels, [(v, b) for _, b, v in rows])
    class_counts, class_tests = _class_counts(labels, [(v, b) for _, b, v in rows])
    lines = [f'### {title}', '',
             '| question | baseline | variant | runs | ' + ' | '.join(SUMMARY_STATS.values()) +
             ' | classes better / worse in the variant |',
             '|---|---|---|---|' + '---|' * (len(SUMMARY_STATS) + 1)]
    for question, b, v in rows:
      cells = [(f'**{_interval(tests[v, b][k])}**' if adjusted[(v, b), k] <= ALPHA
                else _interval(tests[v, b][k])) for k in SUMMARY_STATS]
      n_b, n_v = len(labels[b]['runs']), len(labels[v]['runs'])
      counts = class_counts[v, b]
      lines.append(f'| {question} | {b} | {v} | {n_b} / {n_v} | ' + ' | '.join(cells) +
                   f' | {counts} |')
    lines += ['', 'Variant minus baseline, and its 95% confidence interval (Welch); runs: '
              "baseline / variant. **Bold**: Welch's two-sided test significant at "
              f"{ALPHA} after Holm's correction over the {tested} comparisons of this table "
              '(adjusted p-values below). Classes better / worse: per class, Welch of the '
              f'variant against the baseline, Holm over the classes of each row, at {ALPHA}; '
              f'in brackets, Holm over all {class_tests} per-class tests of this table.', '',
              '| baseline -> variant | ' + ' | '.join(f'p ({v})' for v in
                                                     SUMMARY_STATS.values()) + ' |',
              '|---|' + '---|' * len(SUMMARY_STATS)]
    for _, b, v in rows:
      lines.append(f'| {b} -> {v} | ' + _p_cells(adjusted, (v, b)) + ' |')
    if margins:
      lines += ['', equivalence_table(labels, [(v, b) for _, b, v in rows], margins, tests,
                                      adjusted)]
    sections.append('\n'.join(lines))
  return '\n\n'.join(sections)




def verdict(different: bool, equivalent: bool, margin: float) -> str:
  """What a comparison shows: a difference, equivalence within the margin, both (a difference
  smaller than the margin), or neither ('inconclusive': not 'no effect')."""
  if different and equivalent:
    return f'differs, within ±{margin:g}'
  if different:
    return 'differs'
  if equivalent:
    return f'equivalent (±{margin:g})'
  return 'inconclusive'


def equivalence_table(labels: dict, pairs: list[tuple[str, str]], margins: dict[str, float],
                      tests: dict, adjusted: dict,
                      names: Mapping[str, str] = SUMMARY_STATS) -> str:
  """Markdown: for each (variant, baseline) pair and each statistic with a margin, the
  difference with its 90% interval, the two one-sided tests' p-value adjusted by Holm over
  this table's tests, and the verdict, which also uses the family's difference test
  (`tests`, `adjusted`: _family's, so "differs" is the bold of the family's table).
  `names`: each statistic's name in the table."""
  equivalence = {(pair, k): stats.equivalence(
      labels[pair[0]]['fairness'][k]['mean'], labels[pair[0]]['fairness'][k]['std'],
      len(labels[pair[0]]['runs']), labels[pair[1]]['fairness'][k]['mean'],
      labels[pair[1]]['fairness'][k]['std'], len(labels[pair[1]]['runs']), margin)
      for pair in pairs for k, margin in margins.items()}
  corrected = dict(zip(equivalence, stats.holm([e['p'] for e in equivalence.values()])))
  tested = int(sum(np.isfinite(p) for p in corrected.values()))
  names = {k: names[k] for k in margins}
  lines = ['Equivalence: ' + ', '.join(f'{names[k]} within ±{m:g}' for k, m in margins.items())
           + '.', '',
           '| baseline -> variant | ' + ' | '.join(
               f'{names[k]}: diff [90% CI] | p (equivalence) | verdict' for k in margins) + ' |',
           '|---|' + '---|---|---|' * len(margins)]
  for variant, baseline in pairs:
    cells = []
    for k, margin in margins.items():
      e, p = equivalence[(variant, baseline), k], corrected[(variant, baseline), k]
      different = bool(adjusted[(variant, baseline), k] <= ALPHA)
      cells += [_interval(e), _p_cell(p), verdict(different, bool(p <= ALPHA), margin)]
    lines.append(f'| {baseline} -> {variant} | ' + ' | '.join(cells) + ' |')
  lines += ['', 'Difference and its 90% interval (Welch); p (equivalence): the larger p-value '
            "of Welch's two one-sided tests against -margin and +margin, Holm-adjusted over "
            f'the {tested} equivalence tests of this table; equivalent when it is <= {ALPHA} '
            '(the 90% interval lies inside the margin). Differs: the difference test above '
            f"is significant (Holm over its table). Inconclusive: neither; it is no evidence "
            'of "no effect".']
  return '\n'.join(lines)


def fixed_classes_section(report_json: dict, families: dict[str, list[tuple[str, str]]],
                          margin: float | None = None, title: str = '') -> str:
  """Markdown: the bottom statistic recomputed on classes named in advance (the report's
  `fixed_classes`, analysis.runs.FIXED_BOTTOM), for the (variant, baseline) pairs of each
  family (title -> pairs): the difference with its 95% interval, bold where Welch's test is
  significant after Holm over the family's pairs, and with `margin` the equivalence table of
  the same pairs. A pair of a method with itself is no comparison and is dropped (the
  corrections count only real ones); a family whose pairs are not both in the report is left
  out; '' if none, or if the report has no fixed classes."""
  labels, classes = report_json['labels'], report_json.get('fixed_classes')
  if not classes:
    return ''
  name = f'mean IoU of {", ".join(classes)}'
  sections = []
  for family, pairs in families.items():
    pairs = [(v, b) for v, b in pairs if v in labels and b in labels and v != b]
    if not pairs:
      continue
    tests, adjusted, tested = _family(labels, pairs, (FIXED_BOTTOM,))
    lines = [f'#### {family}', '', f'| baseline -> variant | runs | {name}: baseline | '
             'variant | diff [95% CI] | p (Holm) |', '|---|---|---|---|---|---|']
    for variant, baseline in pairs:
      test, p = tests[variant, baseline][FIXED_BOTTOM], adjusted[(variant, baseline),
                                                                  FIXED_BOTTOM]
      values = [labels[m]['fairness'][FIXED_BOTTOM] for m in (baseline, variant)]
      cells = [_mean_std(v) for v in values]
      diff = f'**{_interval(test)}**' if p <= ALPHA else _interval(test)
      lines.append(f"| {baseline} -> {variant} | {len(labels[baseline]['runs'])} / "
                   f"{len(labels[variant]['runs'])} | {' | '.join(cells)} | {diff} | "
                   + _p_cell(p) + ' |')
    lines += ['', 'Variant minus baseline and its 95% confidence interval (Welch); runs: '
              "baseline / variant. **Bold**: Welch's two-sided test significant at "
              f"{ALPHA} after Holm's correction over the {tested} comparisons of this table."]
    if margin is not None:
      lines += ['', equivalence_table(labels, pairs, {FIXED_BOTTOM: margin}, tests, adjusted,
                                      {FIXED_BOTTOM: name})]
    sections.append('\n'.join(lines))
  if not sections:
    return ''
  intro = (f"The bottom 25% above is the mean IoU of {report_json['reference']}'s worst classes "
           'on the split being scored, so its own low draws on that split help choose them, '
           f"which favours every method against {report_json['reference']} there. Here the "
           f'same comparisons on {", ".join(classes)}, named before that split was seen; Holm '
           'over each table.')
  return '\n\n'.join(([f'### {title}'] if title else []) + [intro] + sections)
