"""The PyTorch state_dict listings of the three paper models (tests/models/reference/*_state_dict_shapes.txt,
listed from the unmodified SR3 and DifFace PyTorch modules) compared with our parameter trees."""

import ast
import pathlib

import jax

from diffbfr_jax.models import naming

DATA = pathlib.Path(__file__).resolve().parent / 'reference'


def read_listing(name):
  """{torch key: shape} and the listing's own (total, tensor count) line."""
  shapes, total = {}, None
  for line in (DATA / name).read_text().splitlines():
    if line.startswith('TOTAL'):
      _, _, params, _, tensors = line.split()
      total = (int(params), int(tensors))
    elif line.strip():
      key, shape = line.split(' ', 1)
      shapes[key] = tuple(ast.literal_eval(shape))
  return shapes, total


def assert_tree_matches(params, name):
  shapes, total = read_listing(name)
  ours = {tuple(k.key for k in path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  expected = {naming.flax_path(k, s): naming.flax_shape(s) for k, s in shapes.items()}
  missing = sorted(set(expected) - set(ours))
  extra = sorted(set(ours) - set(expected))
  assert not missing and not extra, f'missing in ours: {missing[:5]}, extra in ours: {extra[:5]}'
  wrong = {p: (ours[p], expected[p]) for p in ours if ours[p] != expected[p]}
  assert not wrong, f'shape mismatches: {list(wrong.items())[:5]}'
  n_params = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
  assert (n_params, len(ours)) == total
