"""A benchmark's published result: one JSON file of data, never markdown.

Every table of docs/benchmarks.md, benchmarks/RESULTS.md and the README's
headline table is rendered (harness/render.py) from these files, so a table
cannot disagree with its data: to correct a number, edit the JSON and
re-render.

A result file (benchmarks/results/<suite>/<name>.json) holds:
  suite, title, date, machine (a sentence: cores, CPU model, the flags that
  decide TensorFlow's kernels), versions, command (as typed, with no
  absolute path), commit, settings (what the suite measured under), and a
  body: a list of blocks, each {'text': markdown prose} or {'table': ...}.
A table is {'id', 'title', 'columns', 'rows'}: columns are
{'key', 'header', 'format' (a format spec for numbers, or absent), 'align'
('left' or 'right'), 'suffix' (printed after a number, e.g. ' %')}; rows
are {key: value} with numbers as numbers and None for "not measured".
"""

from __future__ import annotations

import datetime
import glob
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from typing import Any

from benchmarks.harness import machine
from masklab_tf import files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RESULTS_DIR = os.path.join(REPO, 'benchmarks', 'results')
# Packages whose versions decide what a row measures.
VERSIONED = ('tensorflow', 'tf-keras', 'tf-models-official', 'numpy')
_ABSOLUTE_PATH = re.compile(r'(?<![\w.])/(?:[^\s,=:;\'"()]+/)*[^\s,=:;\'"()]*')


def column(key: str, header: str, fmt: str | None = None,
           align: str | None = None, suffix: str = '') -> dict:
  """A table column: numbers are shown with `fmt` then `suffix`; `align`
  defaults to right for formatted columns, left for text."""
  align = align or ('right' if fmt else 'left')
  spec = {'key': key, 'header': header, 'align': align}
  if fmt:
    spec['format'] = fmt
  if suffix:
    spec['suffix'] = suffix
  return spec


def table(table_id: str, columns: list[dict], rows: list[dict],
          title: str = '') -> dict:
  """A table block; rows are dicts keyed by the columns' keys."""
  keys = {spec['key'] for spec in columns}
  for index, row in enumerate(rows):
    unknown = set(row) - keys
    if unknown:
      raise ValueError(f'table {table_id!r} row {index} has keys no column '
                       f'shows: {sorted(unknown)}')
  block = {'id': table_id, 'columns': columns, 'rows': rows}
  if title:
    block['title'] = title
  return {'table': block}


def text(markdown: str) -> dict:
  """A prose block."""
  return {'text': markdown.strip()}


def shown_command(argv: list[str] | None = None) -> str:
  """The command as a reader would type it from the repository root: `python
  -m benchmarks ...`, absolute paths replaced by their last part (results
  of one machine must not name its folders)."""
  argv = sys.argv[1:] if argv is None else argv
  words = ['python', '-m', 'benchmarks', *argv]
  return ' '.join(relative_paths(word) for word in words)


def relative_paths(value: str) -> str:
  """`value` with absolute paths made repository-relative, or reduced to
  `<name>` outside the repository."""
  def replace(match):
    path = match.group(0)
    if path == REPO or path.startswith(REPO + os.sep):
      return os.path.relpath(path, REPO)
    return f'<{os.path.basename(path.rstrip(os.sep)) or "path"}>'
  return _ABSOLUTE_PATH.sub(replace, value)


def without_machine_paths(value: Any) -> Any:
  """`value` (JSON data) with `relative_paths` applied to every string."""
  if isinstance(value, str):
    return relative_paths(value)
  if isinstance(value, dict):
    return {key: without_machine_paths(item) for key, item in value.items()}
  if isinstance(value, list):
    return [without_machine_paths(item) for item in value]
  return value


def commit() -> str:
  """The checkout's short commit, '+changes' when its tracked files differ
  from it ('' outside git)."""
  def git(*args):
    return subprocess.run(['git', *args], cwd=REPO, capture_output=True,
                          text=True, check=False)
  head = git('rev-parse', '--short', 'HEAD')
  if head.returncode != 0:
    return ''
  dirty = git('diff', '--quiet', 'HEAD', '--').returncode != 0
  return head.stdout.strip() + ('+changes' if dirty else '')


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
  """Versions of the VERSIONED packages (and `extra`, e.g. torch's from a
  job that ran under another interpreter)."""
  found = {}
  for package in VERSIONED:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      continue
  found.update(extra or {})
  return found


def new(suite: str, title: str, body: list[dict],
        settings: dict | None = None, argv: list[str] | None = None,
        extra_versions: dict[str, str] | None = None) -> dict:
  """A result measured now, on this machine, by this command."""
  return {
      'suite': suite,
      'title': title,
      'date': datetime.date.today().isoformat(),
      'machine': machine.describe(),
      'versions': versions(extra_versions),
      'command': shown_command(argv),
      'commit': commit(),
      'settings': settings or {},
      'body': body,
  }


def path(suite: str, name: str, results_dir: str = RESULTS_DIR) -> str:
  return os.path.join(results_dir, suite, f'{name}.json')


def write(result: dict, name: str, results_dir: str = RESULTS_DIR) -> str:
  """Stores `result` as <results_dir>/<suite>/<name>.json; returns the path."""
  target = path(result['suite'], name, results_dir)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  files.write_json(target, result, indent=1)
  return target


def load(file_path: str) -> Any:
  """The JSON of `file_path` (ValueError naming the file if it is not)."""
  with open(file_path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f'{file_path}: not JSON ({error})') from error


def load_all(results_dir: str = RESULTS_DIR) -> dict[str, dict]:
  """{'<suite>/<name>': result} of every result file, in name order.

  Raw per-job files kept beside results (in subfolders) are not results:
  only <suite>/<name>.json files with a body are.
  """
  found = {}
  for file_path in sorted(glob.glob(os.path.join(results_dir, '*', '*.json'))):
    result = load(file_path)
    if isinstance(result, dict) and 'body' in result:
      key = os.path.relpath(file_path, results_dir)[:-len('.json')]
      found[key] = result
  return found


def find_table(result: dict, table_id: str) -> dict[str, Any]:
  """The table `table_id` of `result`'s body (KeyError naming it)."""
  for block in result['body']:
    if 'table' in block and block['table']['id'] == table_id:
      return block['table']
  raise KeyError(f'{result["title"]!r} has no table {table_id!r}')
