"""Paths as the jobs take them: relative ones are made absolute once, where they enter `main`,
against the folder the command runs in (Orbax, for one, refuses relative checkpoint paths)."""

import os

# Every config field that names a file or folder, over all job configs (absent ones are skipped).
PATH_FIELDS = (
    'data.source.path', 'data.source.data_dir', 'data.source.manual_dir',  # training
    'convert.source',  # convert
    'test_set.input_dir', 'test_set.output_dir', 'test_set.data_dir',  # make_test_set
    'input_dir', 'output_dir', 'irm1.checkpoint', 'irm2.checkpoint', 'tem.checkpoint',  # restore
    'restored_dir', 'gt_dir', 'fid_cache_dir', 'data_dir',  # evaluate (data_dir: restore too)
    'reference_dir',  # sample
    'config_dir',  # demo
    'distill.teacher',  # distill
)


def absolute(path: str) -> str:
  """`path` made absolute against the current folder, `~` expanded; '', URLs (gs://...) and
  prepared datasets (tfds:NAME:FIELD) unchanged."""
  if not path or '://' in path or path.startswith('tfds:'):
    return path
  return os.path.abspath(os.path.expanduser(path))


def make_absolute(config) -> None:
  """Makes every non-empty PATH_FIELDS field of `config` absolute, in place."""
  for dotted in PATH_FIELDS:
    *parents, leaf = dotted.split('.')
    node = config
    for name in parents:
      node = node.get(name) if hasattr(node, 'get') else None
      if node is None:
        break
    if node is None or not hasattr(node, 'get') or not isinstance(node.get(leaf), str):
      continue
    node[leaf] = absolute(node[leaf])
