"""The torch-free reader of PyTorch zip files against torch.load on files torch.save wrote."""

import argparse
import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from diffbfr_jax import errors
from diffbfr_jax.convert import torch_zip

torch = pytest.importorskip('torch')


def _expected(value):
  if isinstance(value, torch.Tensor):
    if value.dtype == torch.bfloat16:
      return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return value.detach().numpy()
  return {k: _expected(v) for k, v in value.items()}


def _assert_same(ours, expected):
  if isinstance(expected, dict):
    assert isinstance(ours, dict) and list(ours) == list(expected)
    for k in expected:
      _assert_same(ours[k], expected[k])
    return
  assert isinstance(ours, np.ndarray)
  assert ours.dtype == expected.dtype and ours.shape == expected.shape
  np.testing.assert_array_equal(ours.view(np.uint8) if ours.dtype == ml_dtypes.bfloat16 else ours,
                                expected.view(np.uint8) if ours.dtype == ml_dtypes.bfloat16
                                else expected)


def test_reads_what_torch_wrote(tmp_path):
  gen = torch.Generator().manual_seed(0)
  base = torch.randn(6, 5, generator=gen)
  state = collections.OrderedDict(
      conv=torch.randn(4, 3, 3, 3, generator=gen),
      transposed=base.t(),  # non-contiguous: strides (1, 5)
      sliced=base[2:4, 1:],  # offset into a storage that 'transposed' shares
      scalar=torch.tensor(3.5, dtype=torch.float64),
      half=torch.randn(7, generator=gen).half(),
      bf16=torch.randn(2, 3, generator=gen).bfloat16(),
      steps=torch.arange(5),
      mask=torch.tensor([True, False, True]),
      empty=torch.zeros(0, 4),
      parameter=torch.nn.Parameter(torch.ones(2, 2)),
      nested={'inner': torch.full((3,), 2.0, dtype=torch.float16)},
  )
  path = tmp_path / 'state.pth'
  torch.save(state, path)
  loaded = torch_zip.load(path)
  assert isinstance(loaded, collections.OrderedDict)
  _assert_same(loaded, _expected(torch.load(path, weights_only=True)))
  assert loaded['transposed'].flags.c_contiguous  # copies, independent of the storage
  loaded['transposed'][0, 0] = -1
  assert loaded['sliced'][0, 0] == state['sliced'][0, 0].item()


def test_reads_a_module_state_dict_with_its_metadata(tmp_path):
  module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(4, 8),
                               torch.nn.Linear(8, 2))
  path = tmp_path / 'module.pth'
  torch.save(module.state_dict(), path)
  _assert_same(torch_zip.load(path), _expected(module.state_dict()))


def test_legacy_and_foreign_files_are_clear_errors(tmp_path):
  legacy = tmp_path / 'legacy.pth'
  torch.save({'w': torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
  with pytest.raises(errors.FormatError, match=r'legacy.pth.*legacy format.*install torch'):
    torch_zip.load(legacy)

  other_zip = tmp_path / 'other.pth'
  with zipfile.ZipFile(other_zip, 'w') as z:
    z.writestr('x/readme.txt', 'hello')
  with pytest.raises(errors.FormatError, match='other.pth is a zip file without a data.pkl'):
    torch_zip.load(other_zip)


def test_objects_other_than_tensors_are_refused_without_running_them(tmp_path):
  path = tmp_path / 'with_namespace.pth'
  torch.save({'w': torch.ones(2), 'args': argparse.Namespace(lr=1)}, path)
  with pytest.raises(errors.FormatError, match=r'with_namespace.pth.*argparse.Namespace'):
    torch_zip.load(path)


def test_truncated_storage_is_a_clear_error(tmp_path):
  path = tmp_path / 'good.pth'
  torch.save({'w': torch.ones(16)}, path)
  bad = tmp_path / 'truncated.pth'
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, 'w') as dst:
    for name in src.namelist():
      data = src.read(name)
      dst.writestr(name, data[:8] if name.endswith('/data/0') else data)
  with pytest.raises(errors.FormatError, match=r'truncated.pth.*storage 0 holds 2 elements'):
    torch_zip.load(bad)


def test_unpickler_refuses_globals_by_default():
  # A pickle that would call os.system if its globals were resolved.
  payload = b'cos\nsystem\n(S"echo hacked"\ntR.'
  with zipfile.ZipFile(_bytes_zip({'a/data.pkl': payload})) as archive:
    with pytest.raises(pickle.UnpicklingError, match='os.system'):
      torch_zip.Unpickler(archive, 'a', 'evil.pth').load()


def _bytes_zip(files):
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as z:
    for name, data in files.items():
      z.writestr(name, data)
  buffer.seek(0)
  return buffer
