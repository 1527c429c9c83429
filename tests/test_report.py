"""Evaluation command and report generation from real (tiny) training runs."""

import csv
import json
import os
import shutil

import numpy as np
from PIL import Image
import pytest
from hypothesis import given, settings, strategies as st

from tce_jax import evaluate
from tce_jax import evaluation
from tce_jax import report
from tce_jax import train
from tce_jax.analysis import style


@pytest.fixture(scope='module')
def runs(tmp_path_factory, tiny_dataset_config):
  from conftest import tiny_config  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('runs')
  made = {}
  for name, overrides in [('mcce_s0', {'seed': 0}), ('mcce_s1', {'seed': 1}),
                          ('tce', {'sampling.name': 'tce', 'tce.t': 1.0})]:
    config = tiny_config(tiny_dataset_config, {k: v for k, v in overrides.items() if '.' in k})
    config.seed = overrides.get('seed', 0)
    config.name = 'mcce' if name.startswith('mcce') else 'tce'
    train.train_and_evaluate(config, str(root / name))
    made[name] = str(root / name)
  return made


def test_evaluate_command_writes_record_with_fairness(runs):
  with open(os.path.join(runs['tce'], 'eval', '4.json')) as f:
    plain = json.load(f)
  record = evaluate.evaluate_run(runs['tce'], overrides={'eval.scales': (0.75, 1.0),
                                                         'eval.flip': True})
  assert record['step'] == 4 and record['split'] == 'validation'
  with open(os.path.join(runs['tce'], 'eval', '4.json')) as f:
    assert json.load(f) == plain  # the run's own record is not replaced by a TTA one
  assert plain['protocol']['scales'] == [1.0] and not plain['protocol']['flip']
  assert list(plain['fairness_extra']['recall'])[:2] == ['road', 'sidewalk']
  with open(os.path.join(runs['tce'], 'eval', '4.csv')) as f:
    rows = list(csv.DictReader(f))
  assert [r['class'] for r in rows] == list(plain['per_class_iou'])
  assert list(rows[0]) == ['class', 'iou', 'precision', 'recall', 'labelled_pixels',
                           'predicted_pixels']
  assert sum(int(r['labelled_pixels']) for r in rows) == sum(map(sum, plain['confusion_matrix']))
  road = plain['per_class_iou']['road']
  assert float(rows[0]['iou']) == pytest.approx(road, abs=1e-4)
  with open(os.path.join(runs['tce'], 'eval', '4_ms0.75-1_flip.json')) as f:
    written = json.load(f)
  assert set(written['fairness']) == set(evaluation.OWN_FAIRNESS)  # no reference: no sorted_*
  assert written['fairness']['miou'] == pytest.approx(written['miou'])
  assert written['protocol'] == {
      'split': 'validation', 'output_stride': 16, 'eval_size': None, 'resolution': 'resized',
      'mode': 'whole', 'window': None, 'stride': None, 'scales': [0.75, 1.0], 'flip': True}
  train_record = evaluate.evaluate_run(runs['tce'], split='train')
  assert train_record['split'] == 'train'
  assert os.path.exists(os.path.join(runs['tce'], 'eval', '4_train.json'))
  # What the command prints: the headline, the file written, the change against the run's
  # own evaluation of the step.
  text = evaluate.summary(runs['tce'], record).splitlines()
  assert text[0] == f"Evaluated: {runs['tce']} (step 4)"
  assert text[1].startswith(f"  validation mIoU {record['miou']:.2f}, pixel accuracy ")
  assert 'worst classes: ' in text[1]
  assert text[2] == '  record: ' + os.path.join(runs['tce'], 'eval', '4_ms0.75-1_flip.json')
  assert text[3].startswith("  against the run's own evaluation of step 4 (") and (
      f"mIoU {record['miou'] - plain['miou']:+.2f}" in text[3])
  assert evaluate.summary(runs['tce'], train_record).splitlines()[2].endswith('4_train.json')
  assert len(evaluate.summary(runs['tce'], plain).splitlines()) == 3  # its own: no change


def test_evaluate_errors_name_the_problem(runs, tmp_path):
  with pytest.raises(FileNotFoundError, match='config.json'):
    evaluate.evaluate_run(str(tmp_path))
  with pytest.raises(ValueError, match='checkpoint_step=3'):
    evaluate.evaluate_run(runs['tce'], step=3)


def test_report_renders_every_file(runs, tmp_path):
  out = tmp_path / 'report'
  result = report.make_report([runs['mcce_s0'], runs['mcce_s1'], runs['tce']], str(out),
                              reference=runs['mcce_s0'], qualitative_images=2)
  assert result['reference'] == 'mcce'
  assert result['labels']['mcce']['runs'] == [runs['mcce_s0'], runs['mcce_s1']]
  for name in ('report.md', 'report.csv', 'report.json', 'per_class_iou.png', 'fairness.png',
               'qualitative.png', 'confusion.png', 'confusion.pdf', 'pareto.png', 'pareto.pdf',
               'per_class_difference.png', 'per_class_difference.pdf'):
    assert (out / name).stat().st_size > 0, name
  for name in ('per_class_iou.png', 'fairness.png', 'qualitative.png', 'confusion.png',
               'pareto.png', 'per_class_difference.png'):
    with Image.open(out / name) as image:
      assert image.width >= 400 and image.height >= 300, (name, image.size)
      assert np.asarray(image.convert('L')).std() > 5, f'{name} looks blank'
  text = (out / 'report.md').read_text()
  assert '## Per-class IoU' in text and '## Fairness' in text and '**' in text and ' ± ' in text
  with open(out / 'report.csv') as f:
    rows = list(csv.DictReader(f))
  assert {r['label'] for r in rows} == {'mcce', 'tce'}
  order = result['class_order']
  ious = [result['labels']['mcce']['per_class_iou'][c]['mean'] for c in order]
  assert ious == sorted(ious)  # sorted by the reference (the mcce mean), worst first
  # Fewer qualitative columns on request: image, ground truth and the reference only.
  report.make_report([runs['mcce_s0'], runs['tce']], str(tmp_path / 'few'),
                     reference=runs['mcce_s0'], qualitative_images=2, qualitative_labels=[])
  with Image.open(out / 'qualitative.png') as full, Image.open(
      tmp_path / 'few' / 'qualitative.png') as few:
    assert few.width == pytest.approx(full.width * 3 / 4, rel=0.05)


def test_stored_predictions_make_the_same_qualitative_figure_without_checkpoints(
    runs, tiny_dataset_config, tmp_path):
  """A run's predictions stored with report.write_predictions (a study's committed record)
  draw exactly the figure its checkpoint draws; a record without them is refused by name."""
  from tce_jax.data import datasets  # pylint: disable=g-import-not-at-top
  source = datasets.load_source(tiny_dataset_config, 'validation')
  indices = report.qualitative_indices(source, [11, 12], 2)  # person, rider
  assert len(indices) == 2
  scores = [np.isin(source[i]['label'], [11, 12]).sum() for i in range(len(source))]
  assert scores[indices[0]] == max(scores) and scores[indices[0]] >= scores[indices[1]]
  records = {}
  for name in ('mcce_s0', 'tce'):
    config = evaluate.load_run_config(runs[name])
    predicted = evaluate.predict_labels(config, runs[name], [source[i]['image'] for i in indices])
    assert all(p.shape == source[i]['label'].shape and p.dtype == np.uint8
               for p, i in zip(predicted, indices))
    records[name] = tmp_path / 'records' / name  # config and evaluation, no checkpoints
    shutil.copytree(runs[name], records[name],
                    ignore=shutil.ignore_patterns('checkpoints', 'events.*'))
    report.write_predictions(str(records[name]), indices, predicted,
                             datasets.get_spec(config).palette)
    stored = report.read_predictions(str(records[name]), indices)
    assert all(np.array_equal(a, b) for a, b in zip(stored, predicted))
  for directory, shown in (('from_checkpoints', runs), ('from_records', records)):
    report.make_report([str(shown['mcce_s0']), str(shown['tce'])], str(tmp_path / directory),
                       qualitative_images=2, qualitative_indices=indices)
  figures = sorted(p.name for p in (tmp_path / 'from_checkpoints').glob('*.p[dn][fg]'))
  assert 'qualitative.png' in figures and 'pareto.pdf' in figures
  for name in figures:  # the same bytes, so a rebuilt report equals the committed one
    figure = (tmp_path / 'from_checkpoints' / name).read_bytes()
    assert figure == (tmp_path / 'from_records' / name).read_bytes(), name
    assert b'/CreationDate' not in figure, name
  unstored = next(i for i in range(len(source)) if i not in indices)
  assert report.read_predictions(str(records['tce']), indices + [unstored]) is None
  (records['tce'] / report.QUALITATIVE_DIR / f'{indices[0]}.png').unlink()
  with pytest.raises(FileNotFoundError, match='No checkpoint in'):
    report.make_report([str(records['mcce_s0']), str(records['tce'])], str(tmp_path / 'gone'),
                       qualitative_images=2, qualitative_indices=indices)
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(
      records['tce'] / report.QUALITATIVE_DIR / f'{indices[0]}.png')
  with pytest.raises(ValueError, match='must be a palette PNG of class ids, not mode L'):
    report.read_predictions(str(records['tce']), indices)


def test_report_rejects_bad_arguments(runs, tmp_path):
  with pytest.raises(ValueError, match='--labels has 1 entries for 2 runs'):
    report.make_report([runs['mcce_s0'], runs['tce']], str(tmp_path), labels=['a'])
  with pytest.raises(ValueError, match='is not one of --runs'):
    report.make_report([runs['tce']], str(tmp_path), reference=runs['mcce_s0'])


def test_report_warns_when_runs_differ_in_protocol_or_step(runs, tmp_path, caplog):
  other = tmp_path / 'other'
  shutil.copytree(runs['tce'], other)
  record_file = other / 'eval' / '4.json'
  record = json.loads(record_file.read_text())
  record['protocol']['flip'] = True
  record_file.write_text(json.dumps(record))
  (other / 'eval' / '2.json').write_text(json.dumps(dict(record, step=2)))
  out = tmp_path / 'report'
  with caplog.at_level('WARNING'):
    result = report.make_report([runs['mcce_s0'], str(other)], str(out), qualitative_images=0)
  assert len(result['warnings']) == 1 and 'different protocols' in result['warnings'][0]
  assert 'different protocols' in caplog.text
  text = (out / 'report.md').read_text()
  assert '**Warning**' in text and '"flip": true' in text
  record_file.write_text(json.dumps(dict(record, step=3, protocol=None)))
  (other / 'eval' / '2.json').unlink()
  result = report.make_report([runs['mcce_s0'], str(other)], str(out), qualitative_images=0)
  assert len(result['warnings']) == 2
  assert 'not recorded' in result['warnings'][0] and 'steps' in result['warnings'][1]
  assert 'different training steps' in (out / 'report.md').read_text()
  clean = report.make_report([runs['mcce_s0'], runs['mcce_s1']], str(out), qualitative_images=0)
  assert clean['warnings'] == [] and '**Warning**' not in (out / 'report.md').read_text()


def test_bold_follows_the_printed_values():
  """0.03 prints as 0.0: beside a 0.0 it is a tie, and a row of ties bolds nothing."""
  def entry(*means):
    return {'runs': ['r0', 'r1'], 'steps': [4, 4],
            'per_class_iou': {c: {'mean': m, 'std': 0.0} for c, m in zip('abc', means)},
            'fairness': {k: {'mean': 1.0, 'std': 0.0} for k in report.STATS}}
  table = {'reference': 'x', 'fraction': 0.25, 'class_order': ['a', 'b', 'c'],
           'excluded_classes': [], 'labels': {'x': entry(0.03, 5.0, 7.26),
                                              'y': entry(0.0, 5.04, 7.24)}}
  rows = {line.split(' | ')[0][2:]: line for line in report.markdown(table).splitlines()
          if line.startswith('| ') and line[2] in 'abc'}
  assert rows['a'] == '| a | 0.0 | 0.0 |'
  assert rows['b'] == '| b | 5.0 | 5.0 |'
  assert rows['c'] == '| c | **7.3** | 7.2 |'


def test_a_report_of_one_run_per_label_says_nothing_was_tested(runs, tmp_path):
  """One run per label: no std (null in report.json, blank in report.csv), no bold, no
  '±', and report.md says that nothing was tested; the figures are still drawn."""
  out = tmp_path / 'single'
  result = report.make_report([runs['mcce_s0'], runs['tce']], str(out),
                              reference=runs['mcce_s0'], qualitative_images=0)
  for entry in result['labels'].values():
    assert all(e['std'] is None for e in entry['per_class_iou'].values())
    assert all(e['std'] is None for e in entry['fairness'].values())
  text = (out / 'report.md').read_text()
  assert 'mcce, tce: one run each' in text and 'no test is possible' in text
  table_rows = [line for line in text.splitlines() if line.startswith('|')]
  assert table_rows and not any('**' in line or ' ± ' in line for line in table_rows)
  with open(out / 'report.csv') as f:
    assert {r['std'] for r in csv.DictReader(f)} == {''}
  for name in ('pareto.png', 'per_class_difference.png', 'per_class_iou.png'):
    assert (out / name).stat().st_size > 0


def test_pareto_front_by_brute_force():
  rng = np.random.default_rng(0)
  for _ in range(20):
    x, y = rng.integers(0, 5, (2, 12)).astype(float)  # many ties
    front = report.pareto_front(x, y)
    for i in range(12):
      beaten = any(x[j] >= x[i] and y[j] >= y[i] and (x[j], y[j]) != (x[i], y[i])
                   for j in range(12))
      assert (i in front) == (not beaten)
    assert [x[i] for i in front] == sorted(x[i] for i in front)
  assert report.pareto_front([1, 2, 3], [3, 2, 1]) == [0, 1, 2]
  assert report.pareto_front([1, 2, 3], [1, 2, 3]) == [2]


def _overlap(a, b) -> bool:
  return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(450, 550), st.floats(450, 550)), min_size=1, max_size=14),
       st.integers(20, 80))
def test_label_offsets_never_overlap_when_there_is_room(points, width):
  """A crowded cluster in a wide frame: every label finds a spot clear of the other labels,
  of every marker and of an obstacle, inside the frame, and the anchor rule (left edge for
  a label to the right, right edge for one to the left) holds."""
  points, sizes = np.array(points), np.full((len(points), 2), [width, 10.0])
  legend = (0.0, 900.0, 200.0, 1000.0)
  offsets = report.label_offsets(points, sizes, (0, 0, 1000, 1000), obstacles=[legend])
  boxes = []
  for (px, py), (dx, dy), (w, h) in zip(points, offsets, sizes):
    x0 = px + dx if dx >= 0 else px + dx - w
    boxes.append((x0, py + dy - h / 2, x0 + w, py + dy + h / 2))
  markers = [(px - 5, py - 5, px + 5, py + 5) for px, py in points]
  for i, b in enumerate(boxes):
    assert 0 <= b[0] and b[2] <= 1000 and 0 <= b[1] and b[3] <= 1000
    assert not _overlap(b, legend)
    assert not any(_overlap(b, m) for m in markers), (i, b)
    assert not any(_overlap(b, c) for c in boxes[:i] + boxes[i + 1:]), (i, b)


def test_a_lone_label_sits_next_to_its_point_and_a_cornered_one_moves_inside():
  np.testing.assert_allclose(
      report.label_offsets([[100, 100]], [[40, 10]], (0, 0, 500, 500)), [[8, 0]])
  # At the frame's right edge the label goes to the left of its point.
  (dx, _), = report.label_offsets([[495, 100]], [[40, 10]], (0, 0, 500, 500))
  assert dx < 0


def test_sweep_figure_draws_the_series_present(tmp_path):
  def entry(miou, bottom):
    return {'runs': ['r', 'r'], 'fairness': {'miou': {'mean': miou, 'std': 0.5},
                                             'sorted_bottom': {'mean': bottom, 'std': None}}}
  table = {'reference': 'mcce', 'fraction': 0.25, 'class_order': list('abcdefgh'),
           'labels': {'mcce': entry(70, 30), 'uniform': entry(71, 33), 't1': entry(69, 35),
                      't100': entry(60, 40)}}
  drawn = report.plot_sweep(table, str(tmp_path), {
      'image': {0.0: 'uniform', 1.0: 't1', 10.0: 't10', 100.0: 't100'},  # t10: no runs
      'class': {1.0: 'absent'}})
  assert drawn == ['image']
  assert (tmp_path / 'sweep.png').stat().st_size > 0 and (tmp_path / 'sweep.pdf').exists()
  assert report.plot_sweep(table, str(tmp_path / 'none'), {'class': {1.0: 'absent'}}) == []
  assert not (tmp_path / 'none').exists()


def test_a_figure_added_through_the_registry_alone(runs, tmp_path):
  """A new figure is one function registered by name: the report draws it with its options,
  by default when registered so, and names the registered figures when asked for another."""
  from tce_jax.analysis import registry  # pylint: disable=g-import-not-at-top
  drawn = []

  @registry.register('miou_text', default=False)
  def draw(loaded, result, out, options):
    drawn.append(options)
    with open(os.path.join(out, 'miou.txt'), 'w') as f:
      f.write(' '.join(f"{label} {entry['fairness']['miou']['mean']:.2f}"
                       for label, entry in result['labels'].items()) + options['suffix'])
    assert len(loaded) == 2

  try:
    out = tmp_path / 'report'
    report.make_report([runs['mcce_s0'], runs['tce']], str(out), figures=['miou_text'],
                       figure_options={'miou_text': {'suffix': '!'}})
    assert drawn == [{'suffix': '!'}]
    assert (out / 'miou.txt').read_text().startswith('mcce ') and not (out / 'pareto.png').exists()
    with pytest.raises(ValueError, match=r"No figure 'nothing'; registered: \[.*'miou_text'"):
      report.make_report([runs['mcce_s0']], str(out), figures=['nothing'])
  finally:
    registry.FIGURES.pop('miou_text')


@pytest.mark.parametrize('lab1, lab2, expected', [
    # Sharma, Wu and Dalal (2005), Table 1: pairs 1, 2, 7, 11, 17, 25, 34.
    ((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425),
    ((50, -1.3802, -84.2814), (50, 0, -82.7485), 1.0000),
    ((50, 0, 0), (50, -1, 2), 2.3669),
    ((50, 2.49, -0.001), (50, -2.49, 0.0009), 7.1792),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
    ((90.9257, -0.5406, -0.9208), (88.6381, -0.8985, -0.7239), 1.5381)])
def test_ciede2000_matches_the_published_pairs(lab1, lab2, expected):
  assert float(style.ciede2000(lab1, lab2)) == pytest.approx(expected, abs=1e-4)
  assert float(style.ciede2000(lab2, lab1)) == pytest.approx(expected, abs=1e-4)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 18), min_size=1, max_size=19, unique=True))
def test_distinct_palette_separates_the_shown_classes_and_keeps_the_rest(shown):
  from tce_jax.data import classes  # pylint: disable=g-import-not-at-top
  palette = np.asarray(classes.CITYSCAPES_PALETTE, np.uint8)
  out = style.distinct_palette(palette, shown)
  labs = {c: style.to_lab(out[c]) for c in shown}
  black = style.to_lab(np.zeros(3))
  for i, c in enumerate(shown):
    assert float(style.ciede2000(labs[c], black)) >= style.MIN_COLOR_DIFFERENCE
    for d in shown[:i]:
      assert float(style.ciede2000(labs[c], labs[d])) >= style.MIN_COLOR_DIFFERENCE, (c, d)
  untouched = [c for c in range(len(palette)) if c not in shown]
  assert (out[untouched] == palette[untouched]).all()
  assert (out[shown[0]] == palette[shown[0]]).all()  # the most common keeps its colour


def test_a_long_title_is_wrapped_only_where_the_figure_is_too_narrow():
  """The per-class figure's title stays on one line in a wide figure and is wrapped to fit
  inside a narrow one (few classes), where it would otherwise be cut off at both edges."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from tce_jax.analysis.figures import class_differences
  title = 'Per-class IoU difference, classes worst first; framed: beyond noise ' * 2
  for width, wrapped in ((30.0, False), (5.0, True)):
    fig, ax = plt.subplots(figsize=(width, 3.0))
    class_differences._fitted_title(fig, ax, title)
    text = ax.title
    assert ('\n' in text.get_text()) == wrapped
    box = text.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
    plt.close(fig)
