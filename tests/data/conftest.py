import io

import numpy as np
from PIL import Image
import pytest


def png_bytes(array, mode=None):
  buffer = io.BytesIO()
  Image.fromarray(array, mode=mode).save(buffer, format='PNG')
  return buffer.getvalue()


@pytest.fixture
def face_folder(tmp_path):
  """A folder of 6 decodable faces of odd kinds and sizes (nested) and 4 undecodable files."""
  rng = np.random.default_rng(0)
  root = tmp_path / 'faces'
  (root / 'a' / 'b').mkdir(parents=True)
  y, x = np.mgrid[0:40, 0:30]
  rgb = np.stack([6 * y, 8 * x, 3 * (x + y)], -1).clip(0, 255).astype(np.uint8)  # smooth
  (root / 'rgb.png').write_bytes(png_bytes(rgb))
  (root / 'a' / 'gray.png').write_bytes(png_bytes(rgb[..., 0]))
  (root / 'a' / 'rgba.png').write_bytes(png_bytes(np.dstack([rgb, rgb[..., :1]])))
  Image.fromarray(rgb).convert('P').save(root / 'a' / 'b' / 'palette.png')
  (root / 'a' / 'b' / 'deep.png').write_bytes(
      png_bytes((rgb[..., 0].astype(np.uint16) * 257)))
  Image.fromarray(rgb).save(root / 'photo.jpg', quality=95)
  good = png_bytes(rgb)
  (root / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(rng.integers(0, 256, 500,
                                                                              dtype=np.uint8)))
  (root / 'a' / 'truncated.png').write_bytes(good[:len(good) // 2])
  (root / 'empty.jpg').write_bytes(b'')
  (root / 'a' / 'b' / 'text.jpeg').write_text('not an image')
  (root / 'notes.txt').write_text('ignored: not an image suffix')
  return root
