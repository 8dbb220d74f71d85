"""The clean job and the iterate loop on smoke checkpoints written by the training code
(tests/conftest.py)."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from configs import cascade as cascade_config
from configs import clean as clean_config
from configs import iterate as iterate_config
from diffbfr_jax import checkpointing
from diffbfr_jax import main
from diffbfr_jax.errors import ConfigError
from diffbfr_jax.metrics import lpips
from diffbfr_jax.metrics import niqe
from tests import processes


def _read(path):
  return np.asarray(Image.open(path))


def _digest(folder):
  return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
  """32x32 faces, a larger one in a subfolder (resized on reading) and a corrupt file."""
  root = tmp_path_factory.mktemp('faces')
  (root / 'sub').mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(root / f'{i}.png')
  Image.fromarray(rng.integers(0, 256, (48, 40, 3), np.uint8)).save(root / 'sub' / 'big.jpg')
  (root / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
  return root


def _config(smoke_run, input_dir, **fields):
  config = clean_config.get_config('tem,smoke')
  config.tem.checkpoint = str(smoke_run('tem'))
  config.tem.sampling.respacing = '250'  # N2 = 100 of 1000 -> 25 steps
  config.input_dir = str(input_dir)
  config.update(batch_size=2, **fields)
  return config


def test_clean_writes_the_restore_jobs_faces_and_a_manifest(smoke_run, faces, tmp_path, capsys):
  before = _digest(faces)
  summary = main.run(_config(smoke_run, faces), str(tmp_path / 'cleaned'))
  assert _digest(faces) == before  # the originals are only read

  # The same faces from the restore job (TEM alone, the same chain and seed), another batch.
  restored = cascade_config.get_config('fast,smoke')
  restored.irm1.enabled = restored.irm2.enabled = False
  restored.tem.checkpoint = str(smoke_run('tem'))
  restored.update(input_dir=str(faces), batch_size=3)
  main.run(restored, str(tmp_path / 'restored'))
  names = ['0.png', '1.png', '2.png', 'sub/big.png']
  images = tmp_path / 'cleaned' / 'images'
  assert sorted(p.relative_to(images).as_posix() for p in images.rglob('*.png')) == names
  for name in names:
    a, b = _read(images / name).astype(int), _read(tmp_path / 'restored' / name).astype(int)
    assert np.abs(a - b).max() <= 1, name  # equal up to float summation order

  manifest = json.loads((tmp_path / 'cleaned' / 'manifest.json').read_text())
  assert summary == {**{k: v for k, v in manifest.items() if k != 'images'},
                     'manifest': 'manifest.json'}
  assert json.loads((tmp_path / 'cleaned' / 'summary.json').read_text()) == summary
  assert manifest['counts'] == {'images': 5, 'cleaned': 4, 'kept_as_read': 0, 'skipped': 1}
  assert manifest['seed'] == 0 and manifest['selection'] == {'rule': 'all'}
  (stage,) = manifest['stages']
  assert stage['stage'] == 'tem' and stage['step'] == checkpointing.find(smoke_run('tem'))[1]
  assert stage['network_evaluations'] == 25 and stage['sampling']['start_step'] == 100
  records = {r['name']: r for r in manifest['images']}
  assert 'corrupt.png' in records['corrupt.png']['skipped']
  assert records['sub/big.jpg']['resized'] and (records['sub/big.jpg']['height'],
                                                records['sub/big.jpg']['width']) == (48, 40)
  originals = []
  for name in ['0.png', '1.png', '2.png', 'sub/big.jpg']:
    record = records[name]
    assert record['sha256'] == hashlib.sha256((faces / name).read_bytes()).hexdigest()
    assert record['cleaned'] and record['output'] == name.replace('.jpg', '.png')
    original = Image.open(faces / name).convert('RGB')
    originals.append(np.asarray(original.resize((32, 32), Image.Resampling.BICUBIC)))
  cleaned = np.stack([_read(images / n) for n in names])
  expected = np.asarray(lpips.lpips(np.stack(originals), cleaned))
  np.testing.assert_allclose([records[n]['lpips'] for n in ['0.png', '1.png', '2.png',
                                                             'sub/big.jpg']], expected, atol=1e-4)
  assert 0 < min(expected)  # the faces moved
  grid = _read(tmp_path / 'cleaned' / 'grid.png')  # as read above, cleaned below
  np.testing.assert_array_equal(grid, np.concatenate([np.concatenate(originals, 1),
                                                      np.concatenate(list(cleaned), 1)], 0))
  assert f'Cleaned 4 of 5 images into {images}' in capsys.readouterr().out


def test_niqe_selection_resume_and_changed_settings(smoke_run, tmp_path, rng):
  # Faces large enough for NIQE (192x96 at least): smooth ones and noisy ones.
  folder = tmp_path / 'large'
  folder.mkdir()
  ramp = np.linspace(0, 255, 192)[None, :, None] * np.ones((96, 1, 3))
  for i in range(4):
    noisy = np.clip(ramp + rng.normal(0, 10 + 40 * i, ramp.shape), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(folder / f'face_{i}.png')
  scores = {f'face_{i}.png': niqe.niqe(_read(folder / f'face_{i}.png')) for i in range(4)}
  threshold = float(np.median(list(scores.values())))
  out = tmp_path / 'cleaned'
  first = main.run(_config(smoke_run, folder, select='niqe', niqe_threshold=threshold), str(out))
  first_images = json.loads((out / 'manifest.json').read_text())['images']
  for record in first_images:
    assert record['niqe'] == pytest.approx(scores[record['name']], abs=1e-9)
    assert record['cleaned'] == (scores[record['name']] > threshold)
    if not record['cleaned']:  # written as the cascade would have read it, lpips not recorded
      expected = Image.open(folder / record['name']).resize((32, 32), Image.Resampling.BICUBIC)
      np.testing.assert_array_equal(_read(out / 'images' / record['output']), np.asarray(expected))
      assert 'lpips' not in record
  assert first['counts']['cleaned'] == 2 and first['counts']['kept_as_read'] == 2
  assert first['selection'] == {'rule': 'niqe', 'above': threshold}

  # A stop after the first batch: the second batch's records and images are gone.
  log = out / 'records' / 'process_00000.jsonl'
  lines = log.read_text().splitlines()
  log.write_text('\n'.join(lines[:2]) + '\n{"cut')
  kept = {json.loads(line)['output'] for line in lines[:2]}
  for record in first_images:
    if record['output'] not in kept:
      (out / 'images' / record['output']).unlink()
  stamps = {name: (out / 'images' / name).stat().st_mtime_ns for name in kept}
  again = main.run(_config(smoke_run, folder, select='niqe', niqe_threshold=threshold), str(out))
  assert {name: (out / 'images' / name).stat().st_mtime_ns for name in kept} == stamps
  assert again == first
  assert json.loads((out / 'manifest.json').read_text())['images'] == first_images

  with pytest.raises(ConfigError, match=r'seed: 0 before, 1 now'):
    main.run(_config(smoke_run, folder, select='niqe', niqe_threshold=threshold, seed=1),
             str(out))


@pytest.mark.parametrize('fields, message', [
    ({'select': 'worst'}, 'config.select'),
    ({'lpips_net': 'squeeze'}, 'config.lpips_net'),
    ({'input_dir': ''}, 'config.input_dir is empty'),
])
def test_clean_config_errors(fields, message, faces, tmp_path):
  config = clean_config.get_config('tem,smoke')
  config.input_dir = str(faces)
  config.update(fields)
  with pytest.raises(ConfigError, match=message):
    main.run(config, str(tmp_path))


def test_the_cleaned_set_may_not_overlap_the_originals(faces):
  config = clean_config.get_config('tem,smoke')
  config.input_dir = str(faces)
  with pytest.raises(ConfigError, match='overlap'):
    main.run(config, str(faces))  # images/ inside the originals
  config.input_dir = str(faces.parent)
  with pytest.raises(ConfigError, match='overlap'):
    main.run(config, str(faces.parent / 'cleaned'))
  assert not (faces / 'images').exists() and not (faces.parent / 'cleaned').exists()


def test_iterate_trains_cleans_and_trains_again(smoke_run, tmp_path, capsys):
  config = iterate_config.get_config('smoke')
  config.update(num_samples=2, batch_size=8)
  config.start_from.tem = str(smoke_run('tem'))  # round 0: trained already (4 steps)
  root = tmp_path / 'loop'
  summary = main.run(config, str(root))
  rows = summary['rounds']
  assert json.loads((root / 'summary.json').read_text()) == summary
  assert [row['round'] for row in rows] == [0, 1]
  assert rows[0]['checkpoints'] == {'tem': str(smoke_run('tem'))}
  assert rows[1]['faces_dir'] == str(root / 'round_0' / 'cleaned' / 'images')
  # Round 1 went on from round 0's state: 4 steps, then the smoke preset's 2 more.
  assert checkpointing.find(root / 'round_1' / 'tem')[1] == 6
  assert not (root / 'round_0' / 'tem').exists()
  manifest = json.loads((root / 'round_0' / 'cleaned' / 'manifest.json').read_text())
  assert manifest['counts']['cleaned'] == 80 == len(list((root / 'train_faces').iterdir()))
  assert manifest['stages'][0]['checkpoint'] == str(smoke_run('tem'))
  assert rows[1]['moved'] == pytest.approx(manifest['lpips_mean'])
  for row in rows:
    out = root / f'round_{row["round"]}'
    means = json.loads((out / 'eval' / 'summary.json').read_text())['means']
    assert means['psnr'] == row['psnr'] and means['ssim'] == row['ssim']
    assert json.loads((out / 'samples' / 'summary.json').read_text())['fid'] == row['fid_samples']
    assert len(list((out / 'restored').glob('*.png'))) == 21  # the bundled held-out faces
    assert f'| {row["round"]} | ' in (out / 'table.md').read_text()
  assert (root / 'table.md').read_text().count('\n') == 4
  capsys.readouterr()
  without_time = lambda rows: [{k: v for k, v in row.items() if k != 'seconds_this_run'}
                                for row in rows]
  assert without_time(main.run(config, str(root))['rounds']) == without_time(rows)
  again = capsys.readouterr().out
  assert 'round 0, tem: trained already, step 4' in again
  assert 'round 1, tem: trained already (6 steps)' in again
  assert 'Restored' not in again and 'Drew' not in again  # nothing computed twice

  # The same loop as two processes through main: the same rows, each file written once.
  results, _ = processes.two_processes(
      '--config=configs/iterate.py:smoke', f'--workdir={tmp_path / "two"}',
      *processes.flags({'num_samples': 2, 'batch_size': 8,
                        'start_from': {'tem': smoke_run('tem')}}))
  processes.ok(results)
  two = json.loads((tmp_path / 'two' / 'summary.json').read_text())['rounds']
  assert [row['round'] for row in two] == [0, 1]
  for a, b in zip(rows, two):
    assert (a['moved'] is None) == (b['moved'] is None)
    for column in ('psnr', 'ssim', 'fid_samples', 'moved'):
      if a[column] is not None:  # round 1 trained on two devices: float summation order
        assert b[column] == pytest.approx(a[column], rel=1e-3), column
  assert json.loads((tmp_path / 'two' / 'round_0' / 'cleaned' / 'manifest.json').read_text())[
      'counts']['cleaned'] == 80
  assert (tmp_path / 'two' / 'table.md').read_text().count('\n') == 4


def test_iterate_keeps_each_stages_checkpoint_period():
  from configs import tem as tem_config  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import rounds  # pylint: disable=g-import-not-at-top
  files = rounds.ConfigFiles('configs')
  paper = rounds.stage_config(files, 'tem', seed=0, faces='faces')
  assert paper.train.num_steps == tem_config.get_config().train.num_steps == 500_000
  assert paper.train.checkpoint_every == tem_config.get_config().train.checkpoint_every == 5000
  short = rounds.stage_config(files, 'tem', seed=0, steps=300, faces='faces')
  assert short.train.checkpoint_every == 300  # at most the round's steps


def _psnr_mean(restored, gt):
  """Mean PSNR (dB, RGB, 0..255) over the ground-truth faces, from its definition."""
  values = []
  for path in sorted(gt.iterdir()):
    a = _read(restored / path.name).astype(np.float64)
    mse = np.mean((a - _read(path).astype(np.float64)) ** 2)
    values.append(10 * np.log10(255.0 ** 2 / mse))
  return float(np.mean(values))


def test_an_iterate_rerun_with_other_settings_scores_again(smoke_run, tmp_path, capsys):
  config = iterate_config.get_config('smoke')
  config.update(rounds=0, num_samples=2, batch_size=8)
  config.start_from.tem = str(smoke_run('tem'))
  root = tmp_path / 'loop'
  first = main.run(config, str(root))['rounds'][0]
  assert first['steps'] == {'tem': 4} and 'ssim' in first
  config.update(metrics=('psnr',), num_samples=3, test_seed=1)
  capsys.readouterr()
  second = main.run(config, str(root))['rounds'][0]
  out = capsys.readouterr().out
  assert 'the test set in' in out and 'the scores in' in out and 'the samples in' in out
  assert json.loads((root / 'test_set' / 'manifest.json').read_text())['seed'] == 1
  assert 'ssim' not in second
  assert second['psnr'] == pytest.approx(_psnr_mean(root / 'round_0' / 'restored',
                                                    root / 'test_set' / 'gt'), abs=1e-4)
  assert second['psnr'] != pytest.approx(first['psnr'], abs=1e-3)  # another test set
  assert json.loads((root / 'round_0' / 'samples' / 'summary.json').read_text())['count'] == 3
  # The same settings again: nothing is made twice.
  assert main.run(config, str(root))['rounds'][0]['psnr'] == second['psnr']
  assert 'Restored' not in capsys.readouterr().out


def test_iterate_config_errors(tmp_path):
  config = iterate_config.get_config('smoke')
  config.stages = 'irm1'
  with pytest.raises(ConfigError, match="cleaner='tem' needs TEM"):
    main.run(config, str(tmp_path))
  config = iterate_config.get_config('smoke')
  config.stages = 'tem,sr'
  with pytest.raises(ConfigError, match='config.stages'):
    main.run(config, str(tmp_path))
  config = iterate_config.get_config('smoke')
  config.mode = 'again'
  with pytest.raises(ConfigError, match='config.mode'):
    main.run(config, str(tmp_path))
