"""The photos job through main on smoke checkpoints (tests/conftest.py)."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from configs import photos as photos_config
from diffbfr_jax import errors
from diffbfr_jax import main

IMAGES = pathlib.Path(__file__).parent / 'images'


@pytest.fixture(scope='module')
def photo_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('photos')
  (root / 'group').mkdir()
  shutil.copy(IMAGES / 'solvay_1927_front_row.jpg', root / 'group' / 'front_row.jpg')
  Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(root / 'plain.png')  # no face
  (root / 'broken.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
  return root


def _config(runs, input_dir, **fields):
  config = photos_config.get_config('fast,smoke')
  for name in ('irm1', 'irm2', 'tem'):
    config[name].checkpoint = str(runs[name])
  config.input_dir = str(input_dir)
  config.update(fields)
  return config


def test_photos_job_writes_every_output(smoke_runs, photo_folder, tmp_path, capsys):
  summary = main.run(_config(smoke_runs, photo_folder, batch_size=4), str(tmp_path))
  out = capsys.readouterr().out
  assert 'Restored 6 faces in 2 photos' in out and 'broken.jpg' in out
  assert summary['photos'] == ['group/front_row.png', 'plain.png']
  assert summary['without_faces'] == ['plain.png'] and len(summary['skipped']) == 1
  assert summary['compiles'] == 1  # 6 faces in batches of 4: one compile
  rel = summary['photos'][0].removesuffix('.png')
  restored = np.asarray(Image.open(tmp_path / f'{rel}.png'))
  assert restored.shape == (1100, 1800, 3)  # 2 x 550 by 2 x 900
  record = json.loads((tmp_path / f'{rel}.json').read_text())
  assert len(record['faces']) == 6 and sorted(record['paste_order']) == list(range(6))
  for i, face in enumerate(record['faces']):
    assert set(face['landmarks']) == {'left_eye', 'right_eye', 'nose', 'mouth_left',
                                      'mouth_right'}
    assert np.asarray(face['matrix']).shape == (2, 3) and face['pasted_box'] is not None
    for kind in ('crop', 'restored'):
      assert np.asarray(Image.open(tmp_path / 'faces' / rel / f'face{i}_{kind}.png')).shape == (
          32, 32, 3)
  # no face: the photo up-sampled, nothing else changed
  plain = np.asarray(Image.open(tmp_path / 'plain.png'))
  assert plain.shape == (120, 160, 3) and (plain == 128).all()
  assert np.asarray(Image.open(tmp_path / 'grids' / f'{rel}.png')).shape == (1100, 3608, 3)
  assert json.loads((tmp_path / 'summary.json').read_text())['faces'] == 6


def test_a_face_does_not_depend_on_its_batch(smoke_runs, photo_folder, tmp_path):
  one, four = tmp_path / 'one', tmp_path / 'four'
  main.run(_config(smoke_runs, photo_folder, batch_size=1, save_grid=False), str(one))
  main.run(_config(smoke_runs, photo_folder, batch_size=4, save_grid=False), str(four))
  faces = sorted(one.glob('faces/**/*_restored.png'))
  assert len(faces) == 6
  for path in faces:
    np.testing.assert_array_equal(np.asarray(Image.open(path)),
                                  np.asarray(Image.open(four / path.relative_to(one))))
  with pytest.raises(errors.Exists, match='overwrite'):
    main.run(_config(smoke_runs, photo_folder, save_grid=False), str(one))


@pytest.mark.parametrize('field,value', [('upscale', 0), ('batch_size', 0), ('min_face_size', 8),
                                         ('thresholds', (0.6, 0.7)), ('input_dir', '')])
def test_bad_fields_are_named(field, value, tmp_path):
  config = photos_config.get_config('fast,smoke')
  config.input_dir = str(tmp_path)
  config[field] = value
  with pytest.raises(errors.ConfigError, match=f'config.{field}'):
    main.run(config, str(tmp_path))
