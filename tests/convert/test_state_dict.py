"""State_dicts in PyTorch layout -> our parameter trees: round trips, wrappers, mismatch errors."""

import collections

import jax
import numpy as np
import pytest

from configs import irm1, irm2, tem
from diffbfr_jax import errors
from diffbfr_jax import models
from diffbfr_jax.convert import state_dict
from diffbfr_jax.diffusion import schedules
from diffbfr_jax.models import naming

STAGES = {'irm1': irm1, 'irm2': irm2, 'tem': tem}


def distinct_params(abstract):
  """Independent uniform float32 values in every tensor, so a transposed, swapped or misplaced
  tensor cannot come back equal."""
  leaves, treedef = jax.tree_util.tree_flatten(abstract)
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_unflatten(
      treedef, [rng.random(leaf.shape, dtype=np.float32) for leaf in leaves])


def torch_layout(params):
  """{PyTorch key: PyTorch-layout array} of a Flax tree (naming's inverse rule)."""
  out = collections.OrderedDict()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    names = tuple(p.key for p in path)
    out[naming.torch_key(names, leaf.ndim)] = naming.torch_array(names, leaf)
  return out


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert x.dtype == np.float32 and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('preset', ['smoke', ''], ids=['smoke', 'paper'])
@pytest.mark.parametrize('stage', sorted(STAGES))
def test_round_trip_gives_identical_parameters(stage, preset):
  abstract = models.abstract_params(STAGES[stage].get_config(preset))
  params = distinct_params(abstract)
  converted = state_dict.to_flax(torch_layout(params), abstract)
  _assert_trees_equal(converted, params)


def test_the_layouts_are_pytorch_ones():
  # A few keys of the published layouts, with their PyTorch shapes (REFERENCE section 4).
  irm = torch_layout(distinct_params(models.abstract_params(irm1.get_config('smoke'))))
  adm = torch_layout(distinct_params(models.abstract_params(tem.get_config('smoke'))))
  c = irm1.get_config('smoke').model.inner_channels
  assert irm['noise_level_mlp.1.weight'].shape == (4 * c, c)
  assert irm['downs.0.weight'].shape == (c, 6, 3, 3)
  assert 'downs.1.res_block.noise_func.noise_func.0.weight' in irm
  attn = [k for k in adm if k.endswith('qkv.weight')]
  assert attn and all(adm[k].ndim == 3 and adm[k].shape[2] == 1 for k in attn)  # 1-D convs
  assert 'time_embed.2.bias' in adm and 'out.2.weight' in adm


def test_wrappers_are_stripped_and_sr3_schedule_buffers_split():
  config = irm1.get_config('smoke')
  abstract = models.abstract_params(config)
  params = distinct_params(abstract)
  betas = schedules.make_schedule(**config.diffusion.schedule).betas
  wrapped = {f'module.denoise_fn.{k}': v for k, v in torch_layout(params).items()}
  wrapped['module.betas'] = betas.astype(np.float32)  # SR3 stores float32 buffers
  wrapped['module.posterior_variance'] = np.zeros_like(betas, np.float32)
  tensors, buffers = state_dict.split_schedule_buffers(state_dict.strip_wrappers(wrapped))
  assert sorted(buffers) == ['betas', 'posterior_variance']
  _assert_trees_equal(state_dict.to_flax(tensors, abstract), params)
  state_dict.check_betas(buffers['betas'], betas, source='f.pth')
  other = schedules.make_schedule('linear', len(betas), 1e-4, 2e-2).betas
  with pytest.raises(errors.ConversionError,
                     match=r'f.pth: was trained with \d+ betas from 1e-06 .* config.diffusion'):
    state_dict.check_betas(buffers['betas'], other, source='f.pth')


def test_mismatches_are_listed_by_pytorch_key():
  abstract = models.abstract_params(tem.get_config('smoke'))
  sd = torch_layout(distinct_params(abstract))
  del sd['out.2.bias']
  sd['label_emb.weight'] = np.zeros((10, 128), np.float32)
  sd['time_embed.0.weight'] = sd['time_embed.0.weight'][:, :-1]
  with pytest.raises(errors.ConversionError) as error:
    state_dict.to_flax(sd, abstract, source='x.pth')
  message = str(error.value)
  assert 'x.pth does not fit the configured network' in message
  assert '1 missing from the file: out.2.bias\n' in message
  assert '1 in the file but not in the network: label_emb.weight\n' in message
  width = tem.get_config('smoke').model.model_channels
  assert (f'1 of the wrong shape: time_embed.0.weight ({4 * width}, {width - 1}), the network '
          f'needs ({4 * width}, {width})\n') in message


def test_a_file_of_another_network_is_refused_with_counts():
  small = torch_layout(distinct_params(models.abstract_params(irm1.get_config('smoke'))))
  with pytest.raises(errors.ConversionError, match=r'\(124 tensors in the file, 362 '
                     r'parameters in the network\)[\s\S]* 80 of the wrong shape: [\s\S]*'
                     r'downs.0.weight \(16, 6, 3, 3\), the network needs \(64, 6, 3, 3\)'):
    state_dict.to_flax(small, models.abstract_params(irm1.get_config()))


def test_integer_tensors_are_refused():
  abstract = models.abstract_params(tem.get_config('smoke'))
  sd = torch_layout(distinct_params(abstract))
  sd['out.2.bias'] = sd['out.2.bias'].astype(np.int64)
  with pytest.raises(errors.ConversionError, match='out.2.bias holds int64 values'):
    state_dict.to_flax(sd, abstract)


def test_reading_files_with_and_without_torch(tmp_path):
  torch = pytest.importorskip('torch')
  sd = {'a.weight': torch.randn(3, 2), 'a.bias': torch.randn(3).bfloat16()}
  plain, wrapped, two = tmp_path / 'plain.pth', tmp_path / 'wrapped.pth', tmp_path / 'two.pth'
  torch.save(sd, plain)
  torch.save({'state_dict': sd, 'epoch': 3}, wrapped)
  torch.save({'ema': sd, 'model': sd}, two)
  for use_torch in (True, False):
    for path in (plain, wrapped):
      got = state_dict.read(path, use_torch=use_torch)
      assert list(got) == ['a.weight', 'a.bias']
      np.testing.assert_array_equal(got['a.weight'], sd['a.weight'].numpy())
      np.testing.assert_array_equal(np.asarray(got['a.bias'], np.float32),
                                    sd['a.bias'].float().numpy())
    with pytest.raises(errors.ConversionError,
                       match=r"two.pth: is not a state_dict and holds 2 state_dicts.*convert.key"):
      state_dict.read(two, use_torch=use_torch)
    assert list(state_dict.read(two, key='model', use_torch=use_torch)) == ['a.weight', 'a.bias']
    with pytest.raises(errors.ConversionError, match=r"has no entry 'emma'.*\['ema', 'model'\]"):
      state_dict.read(two, key='emma', use_torch=use_torch)
    mixed = tmp_path / 'mixed.pth'
    torch.save({1: sd, 'b': 2}, mixed)  # keys of two types: listed as text
    with pytest.raises(errors.ConversionError, match=r"has no entry 'a'.*\['1', 'b'\]"):
      state_dict.read(mixed, key='a', use_torch=use_torch)
