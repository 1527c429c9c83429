"""The package's import graph points down the layers: no cycle, and the reporting and
config-checking modules do not load the training code (read from the sources with ast)."""

import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, 'tce_jax')


def module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, '.')
  return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def import_graph() -> dict[str, set[str]]:
  """Module -> the tce_jax modules it imports at its top level (not inside functions)."""
  modules = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        modules[module_name(path)] = path
  graph = {}
  for name, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read())
    edges = set()
    for node in tree.body:  # top level only: lazy imports inside functions are allowed
      targets = []
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        # `from pkg import mod` depends on pkg.mod (a package's __init__ re-exporting its
        # modules is no cycle); `from pkg.mod import name` on pkg.mod.
        subs = [f'{node.module}.{a.name}' for a in node.names]
        targets = [s for s in subs if s in modules] or [node.module]
      edges.update(t for t in targets if t in modules and t != name)
    graph[name] = edges
  return graph


def reachable(graph, start):
  seen, todo = set(), [start]
  while todo:
    for nxt in graph[todo.pop()]:
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def test_no_import_cycle():
  graph = import_graph()
  cycles = [m for m in graph if m in reachable(graph, m)]
  assert not cycles, f'modules on an import cycle: {sorted(cycles)}'


def test_reports_and_validation_do_not_load_training():
  graph = import_graph()
  for module in ('tce_jax.report', 'tce_jax.config_validation', 'tce_jax.evaluate'):
    assert 'tce_jax.train' not in reachable(graph, module), module
  assert 'tce_jax.evaluator' not in reachable(graph, 'tce_jax.config_validation')
  assert not reachable(graph, 'tce_jax.labels')  # the leaf everyone reads
  assert not any(m.startswith('tce_jax.data') for m in reachable(graph, 'tce_jax.losses'))


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def test_modules_and_functions_stay_small():
  """One idea per module, functions that fit a screen: every module of the package within
  MAX_MODULE_LINES lines, every function (methods and nested ones included) within
  MAX_FUNCTION_LINES."""
  too_long = []
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(folder, name)
      with open(path) as f:
        source = f.read()
      if source.count('\n') > MAX_MODULE_LINES:
        too_long.append(f'{module_name(path)}: {source.count(chr(10))} lines')
      for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          length = node.end_lineno - node.lineno + 1
          if length > MAX_FUNCTION_LINES:
            too_long.append(f'{module_name(path)}.{node.name}: {length} lines')
  assert not too_long, too_long
