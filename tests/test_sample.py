"""The sample job on the smoke TEM checkpoint written by the training code (tests/conftest.py)."""

import json

import numpy as np
import pytest
from PIL import Image

from configs import sample as sample_config
from diffbfr_jax import errors
from diffbfr_jax import main
from diffbfr_jax.errors import ConfigError
from tests import processes


def _config(smoke_run, **fields):
  config = sample_config.get_config('ddim,smoke')
  config.tem.checkpoint = str(smoke_run('tem'))
  config.tem.sampling.respacing = 'ddim10'
  config.num_samples = 5
  config.update(**fields)
  return config


def _read(path):
  return np.asarray(Image.open(path)).astype(int)


def _reference(tmp_path, count: int, seed: int):
  """A folder of `count` random 32x32 faces, the FID reference."""
  reference = tmp_path / 'reference'
  reference.mkdir()
  rng = np.random.default_rng(seed)
  for i in range(count):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(reference / f'{i}.png')
  return reference


def test_samples_depend_on_seed_and_index_only(smoke_run, tmp_path):
  reference = _reference(tmp_path, 3, seed=0)
  summary = main.run(_config(smoke_run, batch_size=3, grid_count=5,
                             reference_dir=str(reference)), str(tmp_path / 'a'))
  again = main.run(_config(smoke_run, batch_size=8), str(tmp_path / 'b'))
  main.run(_config(smoke_run, batch_size=8, seed=1), str(tmp_path / 'c'))
  names = sorted(p.name for p in (tmp_path / 'a' / 'samples').iterdir())
  assert names == [f'sample_{i:05d}.png' for i in range(5)]
  for name in names:
    a = _read(tmp_path / 'a' / 'samples' / name)
    assert a.shape == (32, 32, 3)
    # Other batches: equal up to float summation order, at most 1/255 apart.
    assert np.abs(a - _read(tmp_path / 'b' / 'samples' / name)).max() <= 1, name
    assert np.abs(a - _read(tmp_path / 'c' / 'samples' / name)).mean() > 5, name
  first, second = (_read(tmp_path / 'a' / 'samples' / n) for n in names[:2])
  assert np.abs(first - second).mean() > 5  # two samples differ
  grid = _read(tmp_path / 'a' / 'grid.png')
  assert grid.shape == (2 * 32, 3 * 32, 3)  # 5 faces in rows of 3
  np.testing.assert_array_equal(grid[32:, 32:64], _read(tmp_path / 'a' / 'samples' / names[4]))
  assert not grid[32:, 64:].any()  # the blank sixth place
  saved = json.loads((tmp_path / 'a' / 'summary.json').read_text())
  assert saved == summary and summary['network_evaluations'] == 10
  assert summary['count'] == 5 and summary['sampling']['sampler'] == 'ddim'
  assert np.isfinite(summary['fid']) and summary['fid'] > 0
  assert summary['reference'] == str(reference)
  assert 'fid' not in again

  # Two processes through main, each drawing its share: the same samples, grid and FID.
  results, _ = processes.two_processes(
      '--config=configs/sample.py:ddim,smoke', f'--workdir={tmp_path / "two"}',
      *processes.flags({'tem': {'checkpoint': smoke_run('tem'), 'sampling': {
          'respacing': 'ddim10'}}, 'num_samples': 5, 'batch_size': 3, 'grid_count': 5,
                        'reference_dir': reference}))
  processes.ok(results)
  assert [out.count('Drew 5 samples') for _, out, _ in results] == [1, 0]  # process 0 reports
  for name in ['grid.png'] + [f'samples/{n}' for n in names]:
    assert np.abs(_read(tmp_path / 'a' / name) - _read(tmp_path / 'two' / name)).max() <= 1, name
  two = json.loads((tmp_path / 'two' / 'summary.json').read_text())
  assert two['count'] == 5 and two['reference'] == summary['reference']
  assert two['fid'] == pytest.approx(summary['fid'], rel=1e-3)  # of all five samples


def test_existing_samples_a_truncated_chain_or_no_reference_stop_the_job(smoke_run, tmp_path):
  # (A checkpoint of another stage is refused by cascade.stage_from_checkpoint: test_restore.)
  (tmp_path / 'samples').mkdir()
  (tmp_path / 'samples' / 'sample_00003.png').write_bytes(b'earlier')
  with pytest.raises(errors.Exists, match='sample_00003.png'):
    main.run(_config(smoke_run), str(tmp_path))
  config = _config(smoke_run)
  config.tem.sampling.from_noise = False
  with pytest.raises(ConfigError, match='from_noise=False'):
    main.run(config, str(tmp_path))
  with pytest.raises(FileNotFoundError, match='nowhere'):
    main.run(_config(smoke_run, reference_dir=str(tmp_path / 'nowhere')), str(tmp_path / 'd'))


def test_fid_counts_this_runs_samples_only_and_the_loaded_step_is_recorded(smoke_run, tmp_path):
  from diffbfr_jax.metrics import fid  # pylint: disable=g-import-not-at-top
  reference = _reference(tmp_path, 4, seed=1)
  out = tmp_path / 'out'
  main.run(_config(smoke_run, num_samples=6, grid_count=0), str(out))
  summary = main.run(_config(smoke_run, num_samples=3, grid_count=0, overwrite=True,
                             reference_dir=str(reference)), str(out))
  assert len(list((out / 'samples').iterdir())) == 6  # the earlier run's last three stay
  alone = tmp_path / 'alone'  # the three samples of the second run, by themselves
  alone.mkdir()
  for i in range(3):
    (alone / f'{i}.png').write_bytes((out / 'samples' / f'sample_{i:05d}.png').read_bytes())
  assert summary['count'] == 3
  assert summary['fid'] == pytest.approx(fid.fid_between_folders(str(alone), str(reference)),
                                         rel=1e-6)
  assert summary['fid'] != pytest.approx(
      fid.fid_between_folders(str(out / 'samples'), str(reference)), rel=1e-3)
  assert summary['step'] == 4  # the smoke run's last step, not the requested -1


def test_a_switched_off_tem_or_an_unknown_dtype_is_refused(smoke_run, tmp_path):
  config = _config(smoke_run)
  config.tem.enabled = False
  with pytest.raises(ConfigError, match='tem.enabled=False'):
    main.run(config, str(tmp_path))
  config = _config(smoke_run)
  config.tem.dtype = 'float16'
  with pytest.raises(ConfigError, match="tem.dtype='float16'"):
    main.run(config, str(tmp_path))
  assert not (tmp_path / 'samples').exists()
