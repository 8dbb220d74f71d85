"""The restore job on smoke checkpoints written by the training code (tests/conftest.py)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import cascade as cascade_config
from diffbfr_jax import errors
from diffbfr_jax import main
from diffbfr_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def odd_folder(tmp_path_factory):
  """Faces of every awkward kind, a corrupt one, a non-image, and two files sharing a stem."""
  root = tmp_path_factory.mktemp('lq')
  (root / 'nested' / 'deeper').mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / 'rgb.png')
  Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / 'rgb.jpg')
  Image.fromarray(rng.integers(0, 256, (48, 30), np.uint8)).save(root / 'nested' / 'gray.jpg')
  Image.fromarray(rng.integers(0, 256, (32, 32, 4), np.uint8)).save(root / 'rgba.png')
  Image.fromarray(rng.integers(0, 65536, (20, 20), np.uint16)).save(
      root / 'nested' / 'deeper' / 'deep16.png')
  (root / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  (root / 'notes.txt').write_text('not an image')
  return root


def _config(runs, input_dir, preset='fast,smoke', **fields):
  config = cascade_config.get_config(preset)
  for name in ('irm1', 'irm2', 'tem'):
    config[name].checkpoint = str(runs[name])
  config.input_dir = str(input_dir)
  config.update(fields)
  return config


def _read(path):
  return np.asarray(Image.open(path))


def test_restore_job_writes_every_readable_face_under_its_name(smoke_runs, odd_folder, tmp_path,
                                                               capsys):
  config = _config(smoke_runs, odd_folder, batch_size=3, save_grid=True, save_stages=True)
  report = main.run(config, str(tmp_path))
  names = ['nested/deeper/deep16.png', 'nested/gray.png', 'rgb_jpg.png', 'rgb_png.png',
           'rgba.png']
  assert sorted(report['written']) == names
  assert json.loads((tmp_path / 'summary.json').read_text()) == report
  for name in names:
    assert _read(tmp_path / name).shape == (32, 32, 3)
    assert _read(tmp_path / 'stages' / 'irm1' / name).shape == (16, 16, 3)
    assert _read(tmp_path / 'stages' / 'irm2' / name).shape == (32, 32, 3)
    assert not (tmp_path / 'stages' / 'tem' / name).exists()  # the last stage is the output
    grid = _read(tmp_path / 'grids' / name)
    assert grid.shape == (32, 4 * 32, 3)  # LQ | IRM-1 | IRM-2 | TEM
    np.testing.assert_array_equal(grid[:, 3 * 32:], _read(tmp_path / name))
  np.testing.assert_array_equal(_read(tmp_path / 'grids' / 'rgb_png.png')[:, :32],
                                _read(odd_folder / 'rgb.png'))
  assert len(report['skipped']) == 1 and 'corrupt.png' in report['skipped'][0]
  assert sorted(report['resized']) == ['nested/deeper/deep16.png', 'nested/gray.jpg']
  assert report['batches'] == 2 and report['compiles'] == 1  # 5 faces in batches of 3, 1 compile
  printed = capsys.readouterr().out
  assert 'Skipped 1 unreadable files' in printed and 'corrupt.png' in printed


def test_equal_seeds_give_equal_outputs_whatever_the_batch(smoke_runs, odd_folder, tmp_path):
  def run(folder, **fields):
    # One stage (IRM-s) on a short grid: the keys are what is under test, not the cascade.
    config = _config(smoke_runs, odd_folder, preset='irm_s,smoke', num_samples=2, **fields)
    config.irm2.sampling.respacing = '20'
    return main.run(config, str(tmp_path / folder))

  one = run('a', batch_size=8)
  again = run('b', batch_size=3)  # other batches, other companions in each batch
  run('c', batch_size=8, seed=1)
  assert len(one['written']) == 10 and one['batches'] == 2 and again['batches'] == 4
  for rel in map(pathlib.Path, one['written']):
    path = tmp_path / 'a' / rel
    assert rel.name.endswith(('_sample0.png', '_sample1.png'))
    # Equal up to float summation order in differently sized batches: at most 1/255 apart.
    difference = np.abs(_read(path).astype(int) - _read(tmp_path / 'b' / rel).astype(int))
    assert difference.max() <= 1, rel
    assert np.abs(_read(path).astype(int) - _read(tmp_path / 'c' / rel).astype(int)).mean() > 5
  a0, a1 = (_read(tmp_path / 'a' / f'rgba_sample{k}.png').astype(int) for k in (0, 1))
  assert np.abs(a0 - a1).mean() > 5  # two samples of one face differ


def test_existing_outputs_are_kept_unless_asked(smoke_runs, odd_folder, tmp_path):
  (tmp_path / 'rgba.png').write_bytes(b'earlier result')
  with pytest.raises(FileExistsError, match=r'1 outputs already exist .*rgba\.png.*overwrite'):
    main.run(_config(smoke_runs, odd_folder), str(tmp_path))
  assert (tmp_path / 'rgba.png').read_bytes() == b'earlier result'


def test_one_call_of_the_cascade_is_profiled_for_tensorboard(smoke_runs, odd_folder, tmp_path):
  main.run(_config(smoke_runs, odd_folder, batch_size=2, profile_batch=2), str(tmp_path))
  (run,) = (tmp_path / 'profile' / 'plugins' / 'profile').iterdir()
  assert any(p.name.endswith('.xplane.pb') and p.stat().st_size > 0 for p in run.iterdir())
  with pytest.raises(ConfigError, match='config.profile_batch=-1'):
    main.run(_config(smoke_runs, odd_folder, profile_batch=-1), str(tmp_path / 'b'))


def test_the_compilation_cache_serves_the_next_run(smoke_runs, odd_folder, tmp_path):
  """config.compilation_cache_dir: the first run compiles the cascade and stores every program
  there; the same job again finds each of them and stores nothing new."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_PLATFORMS='cpu')
  cache, stored = tmp_path / 'cache', []
  for run in ('first', 'second'):
    result = subprocess.run(
        [sys.executable, '-m', 'diffbfr_jax.main', '--config=configs/cascade.py:fast,smoke',
         f'--config.input_dir={odd_folder}', f'--workdir={tmp_path / run}',
         *[f'--config.{s}.checkpoint={smoke_runs[s]}' for s in ('irm1', 'irm2', 'tem')],
         f'--config.compilation_cache_dir={cache}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stored.append(sorted(p.name for p in cache.iterdir()))
  assert any(name.startswith('jit_traced-') for name in stored[0])  # the cascade
  assert stored[1] == stored[0]


def _edit_meta(run, tmp_path, **model_fields):
  copy = tmp_path / 'edited'
  shutil.copytree(run, copy)
  meta_files = list((copy / 'checkpoints').glob('*/meta/metadata'))
  assert meta_files
  for meta_file in meta_files:
    meta = json.loads(meta_file.read_text())
    meta['model'].update(model_fields)
    meta_file.write_text(json.dumps(meta))
  return copy


@pytest.mark.parametrize('case', ['other_stage', 'missing', 'empty', 'wrong_shapes',
                                  'wrong_size'])
def test_a_wrong_checkpoint_is_a_clear_error_before_any_compute(case, smoke_runs, odd_folder,
                                                                tmp_path):
  config = _config(smoke_runs, odd_folder)
  if case == 'other_stage':
    config.irm1.checkpoint = str(smoke_runs['tem'])
    error, message = errors.CheckpointError, r'holds a tem checkpoint .*not a irm1 one'
  elif case == 'missing':
    config.irm2.checkpoint = str(tmp_path / 'nowhere')
    error, message = FileNotFoundError, r'nowhere.* does not exist'
  elif case == 'empty':
    config.tem.checkpoint = ''
    error, message = ConfigError, r'config.tem.checkpoint is empty'
  elif case == 'wrong_shapes':
    # The meta says 8 channels wide; the arrays were trained 16 wide.
    config.irm2.checkpoint = str(_edit_meta(smoke_runs['irm2'], tmp_path, inner_channels=8))
    error, message = errors.CheckpointError, r'parameter ema_params/\S+ has shape'
  else:
    config.image_size = 64
    error, message = ConfigError, r'config.image_size=64 differs'
  out = tmp_path / 'out'
  with pytest.raises(error, match=message):
    main.run(config, str(out))
  assert not out.exists() or not any(out.iterdir())


def test_main_reports_a_wrong_checkpoint_without_a_traceback(smoke_runs, odd_folder, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'diffbfr_jax.main', '--config=configs/cascade.py:fast,smoke',
       f'--workdir={tmp_path}', f'--config.input_dir={odd_folder}',
       f'--config.irm1.checkpoint={smoke_runs["irm2"]}',
       f'--config.irm2.checkpoint={smoke_runs["irm2"]}',
       f'--config.tem.checkpoint={smoke_runs["tem"]}'],
      capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert 'error: config.irm1.checkpoint=' in result.stderr
  assert 'holds a irm2 checkpoint' in result.stderr
  assert 'Traceback' not in result.stderr


def test_restore_and_evaluate_read_a_prepared_pairs_dataset_by_name(smoke_runs, tmp_path,
                                                                    monkeypatch):
  """`tfds:face_pairs:lq` and `tfds:face_pairs:gt` with a relative data_dir give what the
  folders they were prepared from give: the same restorations, the same metrics and FID."""
  from configs import evaluate as evaluate_config  # pylint: disable=g-import-not-at-top
  from configs import prepare as prepare_config  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1)
  for name in ('a.png', 'b.png', 'nested/c.png'):
    gt = rng.integers(0, 256, (32, 32, 3), np.uint8)
    lq = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8)
    for side, image in (('lq', lq), ('gt', gt)):
      (tmp_path / 'pairs' / side / 'nested').mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(tmp_path / 'pairs' / side / name)
  monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
  config = prepare_config.get_config()
  config.prepare.update(name='face_pairs', manual_dir='pairs', data_dir='DATASETS')
  main.run(config, None)

  def restore(input_dir, out):
    config = _config(smoke_runs, input_dir, preset='irm_s,smoke', data_dir='DATASETS')
    config.irm2.sampling.respacing = '10'
    return main.run(config, out)

  by_name = restore('tfds:face_pairs:lq', 'from_dataset')
  restore('pairs/lq', 'from_folder')
  written = sorted(by_name['written'])
  assert written == ['a.png', 'b.png', 'nested/c.png']
  for rel in written:
    np.testing.assert_array_equal(_read(tmp_path / 'from_dataset' / rel),
                                  _read(tmp_path / 'from_folder' / rel))

  def evaluate(gt_dir, out):
    config = evaluate_config.get_config()
    config.update(restored_dir='from_dataset', gt_dir=gt_dir, data_dir='DATASETS',
                  metrics=('psnr', 'ssim', 'fid'), batch_size=3)
    return main.run(config, out)

  from_dataset, from_folder = evaluate('tfds:face_pairs:gt', 'eval_a'), evaluate('pairs/gt',
                                                                                  'eval_b')
  assert from_dataset['count'] == 3
  assert from_dataset['means'] == pytest.approx(from_folder['means'], rel=1e-12)
  assert from_dataset['fid'] == pytest.approx(from_folder['fid'], rel=1e-9)
  with pytest.raises(ConfigError, match="image fields"):
    evaluate('tfds:face_pairs:hq', 'eval_c')
