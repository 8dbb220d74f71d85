"""The rule that maps a PyTorch state_dict of SR3 or ADM onto our Flax parameter trees.

Names: split the PyTorch key on '.', join every integer component to the one before it with '_'
(`downs.1.res_block.block1.block.3.weight` -> `downs_1/res_block/block1/block_3`), then rename the
leaf: `weight` -> `kernel` (conv, linear) or `scale` (GroupNorm); `bias` stays. A leading `module.`
(DataParallel) is dropped.

Shapes: conv `(O, I, kh, kw) -> (kh, kw, I, O)`; linear `(O, I) -> (I, O)`; ADM's 1-D attention
convs `(O, I, 1) -> (I, O)` (our qkv and proj_out are Dense); GroupNorm and bias vectors unchanged.
"""

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
