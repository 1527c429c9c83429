"""The examples of examples/ (tce-jax's samplers in a user's own Flax loop) run and check
what they claim: Stochastic TCE's draws are the sampler's, lag steps ahead, and its state is
updated every step; rare class sampling's draws follow its probabilities."""

import os
import runpy

import numpy as np

from conftest import ROOT

EXAMPLES = os.path.join(ROOT, 'examples')


def run_example(name: str, monkeypatch) -> dict:
  monkeypatch.syspath_prepend(EXAMPLES)  # as `python examples/<name>.py` finds its helper
  return runpy.run_path(os.path.join(EXAMPLES, name))['main']()


def test_stochastic_tce_example(monkeypatch, capsys):
  result = run_example('stochastic_tce.py', monkeypatch)
  steps = len(result['used'])
  assert result['draw_counts'].sum() == steps == 80
  assert result['losses'][-1] < 0.5 * result['losses'][0]
  np.testing.assert_allclose(result['probabilities'].sum(), 1.0, rtol=1e-6)
  assert 'checked:' in capsys.readouterr().out


def test_rare_class_sampling_example(monkeypatch, capsys):
  result = run_example('rare_class_sampling.py', monkeypatch)
  p = result['probabilities']
  assert p[0] < 1e-30 and np.argmax(p) == 3  # background (f = 95%) all but never drawn
  assert result['p_value'] > 1e-3 and result['draw_counts'].sum() == 80
  assert 'checked:' in capsys.readouterr().out
