"""The documentation check: what README.md and docs/*.md show is true.

Every command and Python block they show is listed in tests/docs_commands.py
as executed (by a test that exists) or not (with a reason), and nothing is
listed there that no doc shows; the cheap commands run here as shown; every
relative link and image resolves to a file, and every #anchor to a heading
of its target (GitHub's slugs). Pure text work plus a few sub-second
subprocesses: no TensorFlow import.
"""

import ast
import collections
import glob
import os
import re
import shlex
import subprocess
import sys


import docs_commands

from benchmarks.harness import render

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHELL_LANGUAGES = frozenset({'sh', 'bash', 'shell', 'console'})

_FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)')
_HEADING = re.compile(r'^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$')
_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_REFERENCE = re.compile(r'^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)')
_HTML_TARGET = re.compile(r'<(?:img|a)\b[^>]*?\b(?:src|href)="([^"]+)"',
                          re.I)
_HTML_ANCHOR = re.compile(r'<a\b[^>]*?\b(?:name|id)="([^"]+)"', re.I)
_SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:|^//')


def doc_paths(repo=REPO):
  """README.md and docs/*.md, relative to the repository."""
  return ['README.md'] + sorted(
      os.path.relpath(p, repo)
      for p in glob.glob(os.path.join(repo, 'docs', '*.md')))


def split_fences(text):
  """(prose lines, [(language, block lines)]) of a markdown text; prose
  lines inside a block are blanked, so line numbers stay."""
  prose, blocks, fence, language, block = [], [], None, None, None
  for line in text.splitlines():
    match = _FENCE.match(line)
    if fence is None and match:
      fence, language, block = match.group(1), match.group(2).lower(), []
      prose.append('')
    elif fence is not None:
      if (line.strip().startswith(fence[0] * len(fence))
          and not line.strip().strip(fence[0])):
        blocks.append((language, block))
        fence = None
      else:
        block.append(line)
      prose.append('')
    else:
      prose.append(line)
  if fence is not None:
    blocks.append((language, block))  # An unclosed fence runs to the end.
  return prose, blocks


def _without_comment(line):
  """The line up to an unquoted `#` that starts a word (a shell comment)."""
  quote = None
  for i, char in enumerate(line):
    if quote:
      if char == quote:
        quote = None
    elif char in '\'"':
      quote = char
    elif char == '#' and (i == 0 or line[i - 1].isspace()):
      return line[:i]
  return line


def shell_commands(language, lines):
  """The commands of a shell block: `$ ` prompts stripped (in a console
  block only prompted lines are commands, the rest is output), lines ending
  in a backslash joined to the next, comments and blank lines skipped."""
  commands, pending = [], ''
  for line in lines:
    stripped = line.strip()
    if not pending:
      if stripped.startswith('$ ') or stripped == '$':
        stripped = stripped[1:].strip()
      elif language == 'console':
        continue
    if stripped.endswith('\\'):
      pending += stripped[:-1] + ' '
      continue
    command = ' '.join(_without_comment(pending + stripped).split())
    pending = ''
    if command:
      commands.append(command)
  if pending.strip():
    commands.append(' '.join(_without_comment(pending).split()))
  return commands


def python_key(lines):
  """'python: ' + the block's first line that is not blank, a comment or
  an import: what names the block in docs_commands.COMMANDS."""
  for line in lines:
    stripped = line.strip()
    if stripped and not stripped.startswith(('#', 'import ', 'from ')):
      return 'python: ' + stripped
  return 'python: '


def shown_commands(repo=REPO):
  """{key: [doc paths showing it]} over every doc."""
  shown = collections.defaultdict(list)
  for path in doc_paths(repo):
    with open(os.path.join(repo, path), encoding='utf-8') as f:
      _, blocks = split_fences(f.read())
    for language, lines in blocks:
      if language in SHELL_LANGUAGES:
        keys = shell_commands(language, lines)
      elif language == 'python':
        keys = [python_key(lines)]
      else:
        keys = []
      for key in keys:
        shown[key].append(path)
  return shown


def anchors(text):
  """Every anchor a page has: its headings' slugs (a repeated slug gets
  -1, -2, ...) and HTML name / id attributes."""
  prose, _ = split_fences(text)
  seen, found = collections.Counter(), set()
  for line in prose:
    match = _HEADING.match(line)
    if match:
      slug = render.slug(match.group(2))
      found.add(f'{slug}-{seen[slug]}' if seen[slug] else slug)
      seen[slug] += 1
    found.update(_HTML_ANCHOR.findall(line))
  return found


def link_targets(text):
  """(line number, target) of every link, image and reference definition
  in the prose (code blocks and code spans are not links)."""
  prose, _ = split_fences(text)
  for number, line in enumerate(prose, 1):
    line = re.sub(r'(`+)(?:(?!\1).)+?\1', '', line)
    for pattern in (_LINK, _REFERENCE, _HTML_TARGET):
      for target in pattern.findall(line):
        yield number, target


def broken_links(repo=REPO):
  """'doc:line: target: why' for each relative link that does not resolve."""
  problems, pages = [], {}
  for path in doc_paths(repo):
    with open(os.path.join(repo, path), encoding='utf-8') as f:
      text = f.read()
    for number, target in link_targets(text):
      if _SCHEME.match(target):
        continue
      file_part, _, anchor = target.partition('#')
      resolved = (os.path.normpath(os.path.join(os.path.dirname(path),
                                                file_part))
                  if file_part else path)
      where = f'{path}:{number}: {target}'
      if resolved.startswith('..'):
        problems.append(f'{where}: leaves the repository')
        continue
      full = os.path.join(repo, resolved)
      if not os.path.exists(full):
        problems.append(f'{where}: no file {resolved}')
        continue
      if anchor and resolved.endswith('.md'):
        if resolved not in pages:
          with open(full, encoding='utf-8') as f:
            pages[resolved] = anchors(f.read())
        if anchor not in pages[resolved]:
          problems.append(f'{where}: no heading #{anchor} in {resolved}')
  return problems


def _test_exists(test_id, repo=REPO):
  """Whether 'tests/x.py::test_name[param]' names a top-level test
  function of that file."""
  path, _, name = test_id.partition('::')
  name = name.split('[')[0]
  full = os.path.join(repo, path)
  if not name or not os.path.isfile(full):
    return False
  with open(full, encoding='utf-8') as f:
    tree = ast.parse(f.read())
  return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             and node.name == name for node in tree.body)


def manifest_problems(shown, manifest):
  """What is wrong between the docs' commands and the manifest."""
  problems = []
  for key, paths in sorted(shown.items()):
    if key not in manifest:
      problems.append(f'{", ".join(sorted(set(paths)))} shows {key!r}, '
                      'which tests/docs_commands.py does not list: add it as '
                      'Executed(test) or NotExecuted(reason)')
  for key, entry in sorted(manifest.items()):
    if key not in shown:
      problems.append(f'tests/docs_commands.py lists {key!r}, which no doc '
                      'shows any more: remove it')
    elif isinstance(entry, docs_commands.Executed):
      if not _test_exists(entry.test):
        problems.append(f'{key!r}: its test {entry.test} does not exist')
    elif not (isinstance(entry, docs_commands.NotExecuted)
              and entry.reason.strip()):
      problems.append(f'{key!r}: an entry is Executed(test) or '
                      f'NotExecuted(reason), not {entry!r}')
  return problems


def test_every_shown_command_is_in_the_manifest_and_nothing_stale():
  problems = manifest_problems(shown_commands(), docs_commands.COMMANDS)
  assert not problems, '\n'.join(problems)


def test_every_relative_link_resolves():
  problems = broken_links()
  assert not problems, '\n'.join(problems)


def _argv(command):
  """The command's argv, run with this interpreter (the venv's)."""
  argv = shlex.split(command)
  if argv[0] == '.venv/bin/python':
    argv[0] = sys.executable
  elif argv[0].startswith('bin/'):
    argv.insert(0, sys.executable)
  return argv


def test_cheap_commands_run_as_shown():
  cheap = [key for key, entry in docs_commands.COMMANDS.items()
           if entry == docs_commands.Executed(docs_commands.CHEAP)]
  assert cheap, 'no cheap command left to run: drop this test'
  for command in cheap:
    done = subprocess.run(_argv(command), cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    # absl ends --help with exit status 1 by design, after the usage text.
    helped = ('--help' in command and done.returncode == 1
              and 'Usage:' in done.stdout and 'Traceback' not in done.stderr)
    assert done.returncode == 0 or helped, (
        f'{command}: exit {done.returncode}\n{done.stderr[-2000:]}')


# The checker itself, on small made-up pages: each rule fails when broken.


def _write(root, files):
  for path, text in files.items():
    os.makedirs(os.path.dirname(os.path.join(root, path)) or root,
                exist_ok=True)
    with open(os.path.join(root, path), 'w', encoding='utf-8') as f:
      f.write(text)


def test_commands_are_extracted_as_a_shell_would_read_them():
  block = ['# a comment', '$ make demo   # trains', 'bin/x --a=1 \\',
           '    --b="#not a comment"', '', 'out: not a command']
  assert shell_commands('bash', block) == [
      'make demo', 'bin/x --a=1 --b="#not a comment"', 'out: not a command']
  assert shell_commands('console', block) == ['make demo']
  assert python_key(['', 'import os', '# why', 'x = 1']) == 'python: x = 1'


def test_github_slugs():
  text = ('# What `make demo` does\n## Sparse taps\n## Sparse taps\n'
          '## [Link](x.md) & more: 2.0!\n```\n# not a heading\n```\n'
          '<a name="custom"></a>\n')
  assert anchors(text) == {'what-make-demo-does', 'sparse-taps',
                           'sparse-taps-1', 'link--more-20', 'custom'}


def test_the_check_fails_on_a_broken_link_or_anchor(tmp_path):
  _write(str(tmp_path), {
      'README.md': ('[ok](docs/a.md#two) ![img](docs/missing.png) '
                    '[gone](docs/a.md#three) `[code](nowhere.md)` '
                    '[web](https://x.org/y)\n'
                    '```bash\ncat [x](nowhere.md)\n```\n'),
      'docs/a.md': '# One\n## Two\n[up](../README.md) [self](#one)\n'})
  assert broken_links(str(tmp_path)) == [
      'README.md:1: docs/missing.png: no file docs/missing.png',
      'README.md:1: docs/a.md#three: no heading #three in docs/a.md']


def test_the_check_fails_on_an_unlisted_or_stale_command():
  executed = docs_commands.Executed(docs_commands.CHEAP)
  shown = {'make demo': ['README.md'], 'make test': ['README.md'],
           'bin/bogus --flag': ['docs/a.md'], 'bin/ok': ['docs/a.md']}
  manifest = {'make demo': docs_commands.Executed('tests/test_docs.py::nope'),
              'bin/gone': docs_commands.NotExecuted('was shown once'),
              'bin/ok': executed,
              'make test': docs_commands.NotExecuted(' ')}
  problems = manifest_problems(shown, manifest)
  assert len(problems) == 4, problems
  assert "docs/a.md shows 'bin/bogus --flag'" in problems[0]
  assert "lists 'bin/gone', which no doc shows" in problems[1]
  assert 'tests/test_docs.py::nope does not exist' in problems[2]
  assert "'make test': an entry is" in problems[3]
