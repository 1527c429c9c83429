"""The documentation stands on its own: every link of README.md and docs/ points to a file
of the repository (and, where it names a section, to a heading of that file); none leads
outside the repository."""

import os
import re

from conftest import ROOT

LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def markdown_files() -> list[str]:
  paths = [os.path.join(ROOT, 'README.md')]
  for folder, _, files in os.walk(os.path.join(ROOT, 'docs')):
    paths += [os.path.join(folder, f) for f in files if f.endswith('.md')]
  return sorted(paths)


def slug(heading: str) -> str:
  """The anchor a Markdown renderer (GitHub's rule) gives a heading."""
  text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
  return text.replace(' ', '-')


def anchors(path: str) -> set[str]:
  with open(path) as f:
    text = re.sub(r'```.*?```', '', f.read(), flags=re.S)  # '#' lines of code blocks
  return {slug(m) for m in re.findall(r'^#+ (.+)$', text, flags=re.M)}


def test_every_link_resolves_inside_the_repository():
  broken = []
  for path in markdown_files():
    with open(path) as f:
      text = re.sub(r'```.*?```', '', f.read(), flags=re.S)
    for target in LINK.findall(text):
      where = f'{os.path.relpath(path, ROOT)}: {target}'
      if re.match(r'[a-z]+:', target):
        broken.append(f'{where} (outside the repository)')
        continue
      file_part, _, anchor = target.partition('#')
      resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if (
          file_part) else path
      if not os.path.exists(resolved):
        broken.append(f'{where} (no such file)')
      elif anchor and resolved.endswith('.md') and anchor not in anchors(resolved):
        broken.append(f'{where} (no such section)')
  assert not broken, '\n'.join(broken)
