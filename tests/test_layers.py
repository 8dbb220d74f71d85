"""The package's layers (docs/design.md): no import runs upward or in a loop, and the jobs keep
their one shape. Read from the source of every module (imports inside functions included)."""

import ast
import inspect
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'diffbfr_jax'

# From the bottom up; a module may import its own unit and those of lower floors only.
FLOORS = (
    ('errors', 'paths', 'models', 'diffusion'),
    ('resume', 'config_checks', 'config_files', 'parallel', 'data', 'convert', 'photos'),
    ('checkpointing', 'metrics', 'faces', 'job_outputs'),
    ('train', 'cascade', 'longtail'),
    ('rounds', 'distill'),
    ('jobs',),
    ('main',),
    ('benchmarks',),
)
FLOOR = {unit: i for i, units in enumerate(FLOORS) for unit in units}


def _module(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
  return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob('*.py')}


def _imports(path: pathlib.Path) -> set:
  """The package modules `path` imports, anywhere in it (a package: its __init__)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      # `from P import M`: the module P.M when there is one, else (a name defined in P) P.
      names = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in MODULES
               else node.module for a in node.names]
    else:
      continue
    for name in names:
      while name and name not in MODULES:
        name = name.rpartition('.')[0]
      if name.startswith('diffbfr_jax.'):
        found.add(name)
  return found


GRAPH = {m: _imports(p) - {m} for m, p in MODULES.items()}


def _unit(module: str) -> str:
  return module.split('.')[1]


def test_every_module_is_on_a_floor():
  assert {_unit(m) for m in MODULES if m != 'diffbfr_jax'} <= set(FLOOR)


def test_no_import_runs_upward():
  upward = [f'{m} (floor {FLOOR[_unit(m)]}) imports {i} (floor {FLOOR[_unit(i)]})'
            for m, imported in GRAPH.items() if m != 'diffbfr_jax' for i in imported
            if _unit(i) != _unit(m) and FLOOR[_unit(i)] >= FLOOR[_unit(m)]]
  assert not upward, upward


def test_no_import_loop():
  state = {}

  def visit(module, path):
    if state.get(module) == 'done':
      return
    assert state.get(module) != 'open', 'import loop: ' + ' -> '.join(path + [module])
    state[module] = 'open'
    for imported in sorted(GRAPH[module]):
      visit(imported, path + [module])
    state[module] = 'done'

  for module in sorted(GRAPH):
    visit(module, [])


def test_the_layer_check_sees_an_upward_import():
  """The checks above read what they claim to: train.py imports checkpointing (down a floor),
  and the jobs import rounds."""
  assert 'diffbfr_jax.checkpointing' in GRAPH['diffbfr_jax.train']
  assert 'diffbfr_jax.rounds' in GRAPH['diffbfr_jax.jobs.demo']
  assert 'diffbfr_jax.jobs.restore' in GRAPH['diffbfr_jax.jobs.iterate']  # inside a function


JOBS = sorted(m for m in MODULES if m.startswith('diffbfr_jax.jobs.'))


@pytest.mark.parametrize('module', JOBS)
def test_every_job_has_the_one_shape(module):
  import importlib  # pylint: disable=g-import-not-at-top
  job = importlib.import_module(module)
  assert list(inspect.signature(job.run).parameters) == ['config', 'workdir']
  assert getattr(job, 'PROCESSES', 'all') in ('all', 'main', 'one')
  # Another job is used through its `run` only.
  tree = ast.parse(MODULES[module].read_text())
  others = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            and node.module == 'diffbfr_jax.jobs' for a in node.names}
  used = {(n.value.id, n.attr) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
          and isinstance(n.value, ast.Name) and n.value.id in others}
  assert all(attr == 'run' for _, attr in used), used


def test_the_job_table_is_the_jobs_folder():
  from diffbfr_jax import main  # pylint: disable=g-import-not-at-top
  assert main.job_names() == sorted(m.rpartition('.')[2] for m in JOBS)
  assert {'train', 'restore', 'demo', 'make_test_set', 'prepare', 'convert'} <= set(
      main.job_names())
