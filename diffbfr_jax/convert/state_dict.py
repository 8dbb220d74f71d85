"""A PyTorch state_dict of SR3 or ADM (DifFace, guided-diffusion) -> our Flax parameter tree.

`read(path)` gives {key: NumPy array} from a `.pth` file (with torch when it is installed, else
with `torch_zip`); `to_flax(state_dict, abstract_params)` moves every tensor to its Flax path by
`models.naming`'s rule and checks that the two sides match exactly: every parameter of the network
filled, with the right shape, and nothing in the file left over. Wrappers are unwrapped first:
a `module.` prefix (DataParallel) and SR3's `denoise_fn.` (its GaussianDiffusion holds the UNet).
SR3's files also hold the diffusion's schedule buffers; they are not parameters, and `betas` is
checked against the config's schedule instead.
"""

import collections
import importlib.util
import logging
from typing import Mapping

import jax
import numpy as np

from diffbfr_jax import errors
from diffbfr_jax.convert import torch_zip
from diffbfr_jax.models import naming

# Buffers SR3's GaussianDiffusion registers (set_new_noise_schedule): all derived from `betas`.
SR3_SCHEDULE_BUFFERS = (
    'betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod',
    'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod',
    'sqrt_recipm1_alphas_cumprod', 'posterior_variance', 'posterior_log_variance_clipped',
    'posterior_mean_coef1', 'posterior_mean_coef2')
WRAPPER_PREFIXES = ('module.', 'denoise_fn.')
_LISTED = 12  # keys named per kind of mismatch in an error message


def read(path, *, key: str = '', use_torch=None) -> 'collections.OrderedDict[str, np.ndarray]':
  """{PyTorch key: array} of the state_dict in `path`.

  `key` picks an entry of a file that holds a dict of several things (e.g. 'state_dict'); by
  default a file that is a state_dict is taken as is, and one that holds exactly one
  state_dict-like entry is unwrapped. `use_torch` None uses torch when it is installed.
  """
  if use_torch is None:
    use_torch = importlib.util.find_spec('torch') is not None
  if use_torch:
    obj = _torch_load(path)
  else:
    obj = torch_zip.load(path)
  if key:
    if not isinstance(obj, Mapping) or key not in obj:
      top = sorted(map(str, obj))[:_LISTED] if isinstance(obj, Mapping) else type(obj).__name__
      raise errors.ConversionError(f'{path}: has no entry {key!r} (its top level: {top})')
    obj = obj[key]
  elif isinstance(obj, Mapping) and not _is_state_dict(obj):
    dicts = [k for k, v in obj.items() if isinstance(v, Mapping) and _is_state_dict(v)]
    if len(dicts) != 1:
      raise errors.ConversionError(
          f'{path}: is not a state_dict and holds {len(dicts)} state_dicts {dicts}; pick one with '
          f'config.convert.key (its top level: {sorted(map(str, obj))[:_LISTED]})')
    logging.info('%s: using its entry %r', path, dicts[0])
    obj = obj[dicts[0]]
  if not isinstance(obj, Mapping) or not _is_state_dict(obj):
    raise errors.ConversionError(f'{path}: holds no state_dict of tensors')
  return collections.OrderedDict((str(k), np.asarray(v)) for k, v in obj.items())


def _is_state_dict(obj) -> bool:
  return bool(obj) and all(isinstance(v, np.ndarray) for v in obj.values())


def _torch_load(path):
  import torch  # pylint: disable=g-import-not-at-top (optional)

  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises many kinds for a bad file
    raise errors.FormatError(f'{path}: torch cannot read it as a checkpoint ({e})') from e

  def to_numpy(value):
    if isinstance(value, torch.Tensor):
      value = value.detach()
      return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if isinstance(value, Mapping):
      return collections.OrderedDict((k, to_numpy(v)) for k, v in value.items())
    return value

  return to_numpy(obj)


def strip_wrappers(state_dict: Mapping[str, np.ndarray]) -> dict:
  """Keys without DataParallel's `module.` and SR3's `denoise_fn.` prefixes."""
  out = {}
  for key, value in state_dict.items():
    short = key
    while short.startswith(WRAPPER_PREFIXES):
      short = short.split('.', 1)[1]
    if short in out:
      raise errors.ConversionError(f'two tensors become {short!r} once prefixes are removed')
    out[short] = value
  return out


def split_schedule_buffers(state_dict: Mapping[str, np.ndarray]):
  """(network tensors, SR3 schedule buffers) of an unwrapped state_dict."""
  buffers = {k: v for k, v in state_dict.items() if k in SR3_SCHEDULE_BUFFERS}
  return {k: v for k, v in state_dict.items() if k not in buffers}, buffers


def check_betas(betas, expected, *, source) -> None:
  """SR3 files carry the betas they were trained with: they must be the config's."""
  betas, expected = np.asarray(betas, np.float64), np.asarray(expected, np.float64)
  if betas.shape != expected.shape or not np.allclose(betas, expected, rtol=1e-5, atol=1e-9):
    raise errors.ConversionError(
        f'{source}: was trained with {betas.size} betas from {betas[0]:.3g} to {betas[-1]:.3g}, '
        f'but config.diffusion.schedule gives {expected.size} from {expected[0]:.3g} to '
        f'{expected[-1]:.3g}; set the schedule to the one the checkpoint was trained with')


def to_flax(state_dict: Mapping[str, np.ndarray], abstract_params, *, source='the file'):
  """The Flax parameter tree (float32 NumPy arrays) holding `state_dict`'s tensors.

  `abstract_params` is the network's parameter tree (arrays or ShapeDtypeStructs). Raises a
  ConversionError listing the PyTorch keys that are missing, left over or of the wrong shape.
  """
  wanted = {tuple(k.key for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_params)}
  found, unmapped = {}, []
  for key, value in state_dict.items():
    try:
      found[naming.flax_path(key, value.shape)] = key
    except ValueError:
      unmapped.append(key)
  missing = sorted(naming.torch_key(p, len(wanted[p])) for p in wanted.keys() - found.keys())
  extra = sorted(unmapped + [found[p] for p in found.keys() - wanted.keys()])
  wrong = []
  for path in sorted(wanted.keys() & found.keys()):
    key = found[path]
    try:
      shape = naming.flax_shape(state_dict[key].shape)
    except ValueError:
      shape = None
    if shape != wanted[path]:
      wrong.append(f'{key} {tuple(state_dict[key].shape)}, the network needs '
                   f'{_torch_shape(path, wanted[path])}')
  if missing or extra or wrong:
    parts = [f'{source} does not fit the configured network ({len(state_dict)} tensors in the '
             f'file, {len(wanted)} parameters in the network):']
    for what, keys in (('missing from the file', missing), ('in the file but not in the network',
                                                            extra), ('of the wrong shape', wrong)):
      if keys:
        more = f' and {len(keys) - _LISTED} more' if len(keys) > _LISTED else ''
        parts.append(f'  {len(keys)} {what}: {"; ".join(keys[:_LISTED])}{more}')
    parts.append('  (is the config the one the checkpoint was trained with? config.model must '
                 "describe the checkpoint's network)")
    raise errors.ConversionError('\n'.join(parts))

  flat = {}
  for path in wanted:
    value = state_dict[found[path]]
    if not np.issubdtype(value.dtype, np.floating):
      raise errors.ConversionError(f'{source}: {found[path]} holds {value.dtype} values, not floats')
    flat[path] = np.ascontiguousarray(naming.flax_array(value), np.float32)
  return _nest(flat)


def _torch_shape(path, flax_shape) -> tuple:
  return naming.torch_array(path, np.empty(flax_shape, np.uint8)).shape


def _nest(flat):
  tree = {}
  for path, value in flat.items():
    node = tree
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = value
  return tree
