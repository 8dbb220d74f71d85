"""PyTorch's zip checkpoint format read with zipfile, pickle and NumPy: no torch needed.

A file written by `torch.save` (PyTorch >= 1.6) is a zip archive `<root>/data.pkl` +
`<root>/data/<key>`: the pickle holds the object (a state_dict is an OrderedDict of tensors), and
each tensor refers to a raw storage file by key with its offset, size and stride in elements.
TorchScript archives (`torch.jit.save`) share the layout; `metrics/inception.py` reads one.

The unpickler here rebuilds tensors as NumPy arrays and refuses every other class, so reading an
untrusted file cannot run code.
"""

import collections
import io
import pickle
import zipfile

import ml_dtypes
import numpy as np

from diffbfr_jax import errors

# Storage class names (as pickled: `torch.FloatStorage`, ...) -> NumPy element types.
STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16, 'LongStorage': np.int64, 'IntStorage': np.int32,
    'ShortStorage': np.int16, 'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


class Unpickler(pickle.Unpickler):
  """Unpickles `<root>/data.pkl` of an open archive: tensors become NumPy arrays (copies, in
  native byte order), OrderedDicts stay OrderedDicts. Subclasses may admit more classes by
  overriding `other_class`."""

  def __init__(self, archive: zipfile.ZipFile, root: str, name: str):
    super().__init__(io.BytesIO(archive.read(f'{root}/data.pkl')))
    self.archive, self.root, self.name = archive, root, name
    order = f'{root}/byteorder'
    big = order in archive.namelist() and archive.read(order).strip() == b'big'
    self.byteorder = '>' if big else '<'
    self.storages = {}

  def find_class(self, module, name):
    if module == 'torch._utils' and name == '_rebuild_tensor_v2':
      return self._tensor
    if module == 'torch._utils' and name in ('_rebuild_parameter',
                                             '_rebuild_parameter_with_state'):
      return lambda data, *unused: data
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if module == 'torch' and name in STORAGE_DTYPES:
      return name  # only ever used as the storage type inside a persistent id
    return self.other_class(module, name)

  def other_class(self, module, name):
    raise pickle.UnpicklingError(
        f'{self.name}: unexpected object {module}.{name} (only tensors, numbers and dicts of them '
        'are read without torch)')

  def persistent_load(self, pid):
    kind, storage_type, key, _, numel = pid
    if kind != 'storage' or storage_type not in STORAGE_DTYPES:
      raise pickle.UnpicklingError(f'{self.name}: unsupported storage {storage_type!r}')
    if key not in self.storages:
      dtype = np.dtype(STORAGE_DTYPES[storage_type]).newbyteorder(self.byteorder)
      raw = self.archive.read(f'{self.root}/data/{key}')
      data = np.frombuffer(raw, dtype)
      if data.size != numel:
        raise pickle.UnpicklingError(f'{self.name}: storage {key} holds {data.size} elements, '
                                     f'the pickle says {numel}')
      self.storages[key] = data
    return self.storages[key]

  @staticmethod
  def _tensor(storage, offset, size, stride, *unused):
    del unused  # requires_grad, backward hooks, metadata
    size, stride = tuple(size), tuple(stride)
    if offset < 0 or min(stride, default=0) < 0:
      raise pickle.UnpicklingError(f'a tensor with offset {offset} and stride {stride}')
    if all(size) and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.size:
      raise pickle.UnpicklingError(f'a tensor of size {size} and stride {stride} at offset '
                                   f'{offset} runs past its storage of {storage.size} elements')
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride])
    return view.astype(storage.dtype.newbyteorder('='), order='C', copy=True)


def open_archive(path):
  """(ZipFile, root folder name) of a PyTorch zip file; FormatError naming the file otherwise."""
  if not zipfile.is_zipfile(path):
    raise errors.FormatError(
        f'{path} is not a zip-format PyTorch file: either not a checkpoint, or one written by '
        'torch < 1.6 in the legacy format, which only torch itself reads (install torch, or '
        're-save it with a newer torch)')
  archive = zipfile.ZipFile(path)
  pickles = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
  if not pickles:
    archive.close()
    raise errors.FormatError(f'{path} is a zip file without a data.pkl: not a PyTorch checkpoint')
  return archive, pickles[0].split('/')[0]


def load(path):
  """The object `torch.save` wrote to `path`, with tensors as NumPy arrays."""
  archive, root = open_archive(path)
  with archive:
    try:
      return Unpickler(archive, root, str(path)).load()
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
      raise errors.FormatError(f'{path}: cannot read it as a PyTorch checkpoint ({e})') from e
