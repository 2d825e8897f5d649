"""The package's structure holds: layers import only downwards, no import
circle, no long file without its reason (docs/design.md, "Folders and layers")."""

import ast
import os

import pytest

PACKAGE = 'masklab_tf'
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), PACKAGE)

# What each part may import from the package, besides itself. Lower parts
# know nothing of higher ones: data and ops never import modeling; modeling
# never imports training, serving or evaluation; nothing imports tools.
BASE = {'config', 'determinism', 'files', 'host'}
ALLOWED = {
    'config': {'files'},
    'determinism': {'host'},
    'files': set(),
    'host': set(),
    'ops': BASE,
    'data': BASE | {'ops'},
    'postprocess': BASE | {'ops'},
    'modeling': BASE | {'ops', 'postprocess'},
    'evaluation': BASE | {'ops', 'data', 'postprocess', 'modeling'},
    'training': BASE | {'ops', 'data', 'postprocess', 'modeling',
                        'visualize'},
    'serving': BASE | {'ops', 'postprocess', 'modeling'},
    'visualize': BASE | {'ops'},
    'tools': BASE | {'ops', 'data', 'postprocess', 'modeling', 'evaluation',
                     'training', 'serving', 'visualize'},
}
MAX_LINES = 400
# Files over MAX_LINES must say why at their top, in a line starting so.
LONG_REASON = 'Why one file of'


def _modules():
  """{dotted module: (path, source)} of every module in the package."""
  modules = {}
  for root, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3]
        dotted = rel.replace(os.sep, '.').removesuffix('.__init__')
        with open(path) as f:
          modules[dotted] = (path, f.read())
  return modules


def _imports(source: str) -> set[str]:
  """The package modules a source imports (any depth, lazy ones too)."""
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module.startswith(PACKAGE)):
      found.add(node.module)
      found.update(f'{node.module}.{a.name}' for a in node.names)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith(PACKAGE))
  return found


def _part(dotted: str) -> str:
  parts = dotted.split('.')
  return parts[1] if len(parts) > 1 else ''


@pytest.fixture(scope='module')
def graph():
  modules = _modules()
  # `from masklab_tf import config` names the package too; the package's
  # own __init__ only re-exports lazily.
  return {m: {d for d in _imports(src) if d in modules and d not in (m,
                                                                     PACKAGE)}
          for m, (_, src) in modules.items() if m != PACKAGE}


def test_every_part_is_known():
  parts = {_part(m) for m in _modules()} - {''}
  assert parts <= set(ALLOWED), parts - set(ALLOWED)


def test_imports_run_only_downwards(graph):
  upward = sorted(f'{m} -> {d}' for m, deps in graph.items()
                  for d in deps if _part(m) and _part(d) != _part(m)
                  and _part(d) not in ALLOWED[_part(m)])
  assert not upward, '\n'.join(upward)


def test_no_import_circle(graph):
  state, circles = {}, []

  def visit(module, stack):
    state[module] = 'open'
    stack.append(module)
    for dep in sorted(graph[module]):
      if state.get(dep) == 'open':
        circles.append(' -> '.join(stack[stack.index(dep):] + [dep]))
      elif dep not in state:
        visit(dep, stack)
    stack.pop()
    state[module] = 'done'

  for module in sorted(graph):
    if module not in state:
      visit(module, [])
  assert not circles, '\n'.join(circles)


def test_long_files_say_why_at_their_top():
  unexplained = []
  for module, (path, source) in _modules().items():
    lines = source.count('\n')
    top = ast.get_docstring(ast.parse(source)) or ''
    if lines > MAX_LINES and LONG_REASON not in top:
      unexplained.append(f'{module} ({lines} lines)')
  assert not unexplained, unexplained


def test_the_checks_see_a_violation():
  """The import checks read real imports: a made-up upward one is caught."""
  fake = _imports('from masklab_tf.training import trainer\n'
                  'def f():\n  from masklab_tf.serving import model\n')
  assert fake == {'masklab_tf.training', 'masklab_tf.training.trainer',
                  'masklab_tf.serving', 'masklab_tf.serving.model'}
  assert 'training' not in ALLOWED['modeling']
