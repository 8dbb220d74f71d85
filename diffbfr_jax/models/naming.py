"""The rule that maps a PyTorch state_dict of SR3 or ADM onto our Flax parameter trees.

Names: split the PyTorch key on '.', join every integer component to the one before it with '_'
(`downs.1.res_block.block1.block.3.weight` -> `downs_1/res_block/block1/block_3`), then rename the
leaf: `weight` -> `kernel` (conv, linear) or `scale` (GroupNorm); `bias` stays. A leading `module.`
(DataParallel) is dropped.

Shapes: conv `(O, I, kh, kw) -> (kh, kw, I, O)`; linear `(O, I) -> (I, O)`; ADM's 1-D attention
convs `(O, I, 1) -> (I, O)` (our qkv and proj_out are Dense); GroupNorm and bias vectors unchanged.
"""

import re
from typing import Sequence

import numpy as np


def flax_path(torch_key: str, torch_shape: Sequence[int]) -> tuple[str, ...]:
  """The Flax parameter path of one PyTorch state_dict entry."""
  parts = torch_key.split('.')
  if parts[0] == 'module':
    parts = parts[1:]
  *modules, leaf = parts
  joined: list[str] = []
  for part in modules:
    if part.isdigit():
      if not joined:
        raise ValueError(f'PyTorch key {torch_key!r} starts with an index; no rule maps it.')
      joined[-1] = f'{joined[-1]}_{part}'
    else:
      joined.append(part)
  if leaf == 'bias':
    name = 'bias'
  elif leaf == 'weight':
    name = 'scale' if len(torch_shape) == 1 else 'kernel'
  else:
    raise ValueError(f'PyTorch key {torch_key!r}: leaf {leaf!r} is neither weight nor bias.')
  return (*joined, name)


def torch_key(path: Sequence[str], ndim: int) -> str:
  """The PyTorch key of the Flax parameter at `path` (the inverse of `flax_path`; `ndim` is the
  Flax array's rank). Module names are split at `_<digits>` suffixes: no module of ours ends in
  `_<digits>` by itself."""
  *modules, leaf = path
  parts = []
  for module in modules:
    match = re.fullmatch(r'(.*?)((?:_\d+)+)', module)
    if match:
      parts.append(match.group(1))
      parts.extend(match.group(2).strip('_').split('_'))
    else:
      parts.append(module)
  if leaf not in ('kernel', 'scale', 'bias') or (leaf == 'scale' and ndim != 1):
    raise ValueError(f'Flax parameter {"/".join(path)!r}: no PyTorch key maps onto it')
  return '.'.join(parts + ['bias' if leaf == 'bias' else 'weight'])


def torch_array(path: Sequence[str], flax_array) -> np.ndarray:
  """A Flax parameter laid out as the PyTorch tensor it came from (the inverse of `flax_array`);
  `path` tells ADM attention's 1-D convs (`qkv`, `proj_out`: Dense kernels here) from linears."""
  a = np.asarray(flax_array)
  if path[-1] != 'kernel':
    return a
  if a.ndim == 4:
    return a.transpose(3, 2, 0, 1)
  if path[-2] in ('qkv', 'proj_out'):
    return a.T[:, :, None]
  return a.T


def flax_shape(torch_shape: Sequence[int]) -> tuple[int, ...]:
  """The Flax shape of a PyTorch tensor of `torch_shape` (see the module docstring)."""
  shape = tuple(torch_shape)
  if len(shape) == 4:
    o, i, kh, kw = shape
    return (kh, kw, i, o)
  if len(shape) == 3:
    o, i, k = shape
    if k != 1:
      raise ValueError(f'Only 1-D convs of kernel size 1 have a rule, got shape {shape}.')
    return (i, o)
  if len(shape) == 2:
    return (shape[1], shape[0])
  return shape


def flax_array(torch_array) -> np.ndarray:
  """A PyTorch tensor's values (as a NumPy array) laid out for Flax (see the module docstring)."""
  a = np.asarray(torch_array)
  if a.ndim == 4:
    return a.transpose(2, 3, 1, 0)
  if a.ndim == 3:
    flax_shape(a.shape)  # raises unless the kernel size is 1
    return a[:, :, 0].T
  if a.ndim == 2:
    return a.T
  return a
