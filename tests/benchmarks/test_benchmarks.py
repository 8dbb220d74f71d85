"""The benchmarks run end to end (their figures are printed, not asserted)."""

import pathlib

import pytest
from configs import tem
from diffbfr_jax.benchmarks import chain_overhead


def test_measure_runs_on_a_smoke_config():
  per_eval, per_step = chain_overhead.measure(tem.get_config('smoke'), steps=2, batch=1, repeats=1)
  assert per_eval > 0 and per_step > 0


def test_train_step_benchmark_runs_on_a_smoke_config():
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top

  rate, peak, where = train_step.measure(tem.get_config('smoke'), steps=1)
  assert rate > 0 and peak > 0 and where


def test_cascade_benchmark_runs_on_smoke_networks():
  from configs import cascade as cascade_config  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import cascade  # pylint: disable=g-import-not-at-top

  config = cascade_config.get_config('irm_s,smoke')  # one stage keeps the compile short
  config.irm2.sampling.respacing = '4'
  config_dir = pathlib.Path(__file__).resolve().parents[2] / 'configs'
  evaluations, per_face = cascade.measure(config, size='smoke', batch=1, repeats=1,
                                          config_dir=str(config_dir))
  assert evaluations == {'irm2': 4} and per_face > 0


def test_metrics_benchmark_runs_on_small_images():
  from diffbfr_jax.benchmarks import metrics  # pylint: disable=g-import-not-at-top

  rates = metrics.measure(batch=1, repeats=1, size=192)
  assert set(rates) == {'psnr', 'ssim', 'lpips (vgg)', 'lpips (alex)', 'niqe',
                        'fid (inception features)'}
  assert all(rate > 0 for rate in rates.values())


def test_frontier_runs_its_chains_on_smoke_stages(smoke_runs, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import rounds  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.jobs import demo  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import frontier  # pylint: disable=g-import-not-at-top

  for name in ('irm1', 'irm2', 'tem'):
    shutil.copytree(smoke_runs[name], tmp_path / name)
  config = demo_config.get_config()
  config.networks = 'smoke'
  config.config_dir = str(pathlib.Path(__file__).resolve().parents[2] / 'configs')
  files = rounds.ConfigFiles(config.config_dir, config.networks)
  names, lq, gt = demo.held_out_faces(files, config, tmp_path)
  result = frontier.measure('ddim10', config, tmp_path, names, lq, gt, seeds=2)
  # DDIM grids of 6 (IRM-1, all of it), 4 (IRM-2: the 2 at or below N1 = 1000 of 2000) and
  # 20 (TEM: the 2 at or below N2 = 100 of 1000) steps.
  assert result['stages'] == {'irm1': 6, 'irm2': 2, 'tem': 2} and result['evaluations'] == 10
  assert result['seconds_per_face'] > 0
  assert result['psnr'][1] > 0  # two seeds, two different restorations
  assert 0 < result['lpips'][0] and -1 <= result['ssim'][0] <= 1
  only = frontier.measure('tem_only', config, tmp_path, names, lq, gt, seeds=1)
  assert only['stages'] == {'tem': 100}


def test_the_frontier_samples_distilled_chains_with_the_distill_jobs_students(tmp_path):
  from configs import demo as demo_config  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import frontier  # pylint: disable=g-import-not-at-top

  config = demo_config.get_config()
  config.config_dir = str(pathlib.Path(__file__).resolve().parents[2] / 'configs')
  ccfg = frontier.chain_config('distill4', config, tmp_path)
  for stage in ('irm1', 'irm2', 'tem'):
    assert ccfg[stage].checkpoint == str(tmp_path / 'distill' / stage / 'steps_4')
    assert (ccfg[stage].sampling.respacing, ccfg[stage].sampling.sampler,
            ccfg[stage].sampling.eta, ccfg[stage].sampling.clip_x0) == ('segment4', 'ddim', 0.0,
                                                                        True)
  same_grid = frontier.chain_config('ddim_segment4', config, tmp_path)
  assert same_grid.irm2.checkpoint == str(tmp_path / 'irm2')  # the stages as trained
  assert same_grid.irm2.sampling.respacing == 'segment4'
  elsewhere = frontier.chain_config('distill1', config, tmp_path, tmp_path / 'other')
  assert elsewhere.tem.checkpoint == str(tmp_path / 'other' / 'tem' / 'steps_1')


def test_peer_benchmark_times_each_kind_of_case_with_our_code(monkeypatch):
  from diffbfr_jax.benchmarks import peer  # pylint: disable=g-import-not-at-top

  tiny = dict(peer.SMALL, inner_channel=8, norm_groups=4, channel_mults=(1, 2), attn_res=(8,),
              res_blocks=1, image_size=16)
  monkeypatch.setattr(peer, 'CHAIN_STEPS', 3)
  monkeypatch.setattr(peer, 'CASES', {
      'train': ('t', 'train', tiny, 2, 'img/s', 1), 'chain': ('c', 'chain', tiny, 1, 'ms/step', 1),
      'forward': ('f', 'forward', tiny, 1, 's', 1)})
  config_dir = str(pathlib.Path(__file__).resolve().parents[2] / 'configs')
  figures = {name: peer.ours(name, config_dir) for name in peer.CASES}
  assert all(f > 0 for f in figures.values())
  results = {name: {'peer': [2 * f, 4 * f], 'ours': [f]} for name, f in figures.items()}
  rows = peer.table(results, list(peer.CASES)).splitlines()[2:]
  # The peer's mean is 3x ours: a third of its rate (train) or three times as fast (times).
  assert [row.split('|')[-2].strip() for row in rows] == ['0.33', '3.00', '3.00']


def test_peer_benchmark_names_a_checkout_without_sr3s_files(tmp_path):
  from diffbfr_jax.benchmarks import peer  # pylint: disable=g-import-not-at-top

  with pytest.raises(FileNotFoundError, match=r'sr3_modules/unet\.py not found'):
    peer.peer_modules(tmp_path)


def test_accelerator_benchmark_fits_the_batch_on_the_memory_line():
  from diffbfr_jax.benchmarks import accelerator  # pylint: disable=g-import-not-at-top

  # 10 bytes at batch 1, 13 at 2: 7 fixed + 3 per image; 7 + 3 * 11 = 40 fits, 12 images do not.
  assert accelerator.fitted_batch(10, 13, limit=40, max_batch=256) == 11
  assert accelerator.fitted_batch(10, 13, limit=42.9, max_batch=256) == 11
  assert accelerator.fitted_batch(10, 13, limit=40, max_batch=8) == 8
  assert accelerator.fitted_batch(10, 13, limit=9, max_batch=256) == 0
  assert accelerator.fitted_batch(10, 10, limit=11, max_batch=64) == 64  # no growth seen


def test_accelerator_benchmark_resumes_only_the_same_flags_and_device():
  from diffbfr_jax.benchmarks import accelerator  # pylint: disable=g-import-not-at-top
  before = {'settings': {'dtype': 'float32', 'steps': 10, 'peak_tflops': 989.4,
                         'peak_source': 'data sheet'}}
  now = {'dtype': 'bfloat16', 'steps': 10, 'peak_tflops': None, 'peak_source': None}
  assert accelerator.resume_conflicts(before, now) == [('dtype', 'float32', 'bfloat16')]
  assert accelerator.resume_conflicts(before, dict(now, dtype='float32')) == []
  h100 = {'kind': 'NVIDIA H100 80GB HBM3', 'count': 8}
  assert accelerator.device_conflict(None, h100) == ''
  assert accelerator.device_conflict(h100, dict(h100)) == ''
  assert '8 x NVIDIA H100 80GB HBM3, this run has 1 x' in accelerator.device_conflict(
      h100, dict(h100, count=1))


def test_accelerator_benchmark_measures_again_after_an_out_of_memory_batch(monkeypatch):
  from diffbfr_jax.benchmarks import accelerator  # pylint: disable=g-import-not-at-top
  calls = []

  def worker(task):  # the search tried 64 (out of memory), then found 57
    calls.append(task)
    if 'batch' not in task:
      return dict(task, per_device_batch=57, peak_memory_bytes=80 << 30, step_s=1.0,
                  batch_search={'rule': 'line', 'tried': [64]})
    return dict(task, per_device_batch=task['batch'], peak_memory_bytes=70 << 30, step_s=0.9,
                batch_search={'rule': 'the batch the search found'})

  monkeypatch.setattr(accelerator, '_run_worker', worker)
  row = accelerator._measure({'kind': 'train', 'stage': 'tem', 'remat': False})  # pylint: disable=protected-access
  assert [c.get('batch') for c in calls] == [None, 57]
  assert row['peak_memory_bytes'] == 70 << 30 and row['per_device_batch'] == 57
  assert row['batch_search'] == {'rule': 'line', 'tried': [64], 'measured_again': True}
  assert 'batch' not in row
  calls.clear()  # no failed batch: one process
  monkeypatch.setattr(accelerator, '_run_worker', lambda task: calls.append(task) or dict(
      task, per_device_batch=8, batch_search={'rule': 'line', 'tried': []}))
  accelerator._measure({'kind': 'train', 'stage': 'tem', 'remat': False})  # pylint: disable=protected-access
  assert len(calls) == 1


def test_accelerator_benchmark_knows_the_data_sheet_peaks():
  from diffbfr_jax.benchmarks import accelerator  # pylint: disable=g-import-not-at-top

  assert accelerator.peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16', 0)[0] == 989.4
  assert accelerator.peak_tflops('NVIDIA H100 PCIe', 'bfloat16', 0)[0] == 756.0
  assert accelerator.peak_tflops('TPU v5 lite', 'bfloat16', 0)[0] == 197.0
  assert accelerator.peak_tflops('TPU v5', 'bfloat16', 0)[0] == 459.0
  assert accelerator.peak_tflops('cpu', 'bfloat16', 0)[0] is None
  assert accelerator.peak_tflops('NVIDIA H200', 'float32', 0)[0] is None
  assert accelerator.peak_tflops('cpu', 'float32', 2.5) == (2.5, '--peak_tflops')


def test_accelerator_benchmark_runs_without_tensorflow(tmp_path):
  """The command as documented, from the repository root, with TensorFlow made unimportable:
  a smoke-size run of each kind of measurement writes the documented results file."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  root = pathlib.Path(__file__).resolve().parents[2]
  for name in ('tensorflow', 'tensorflow_datasets'):
    (tmp_path / 'no_tf' / name).mkdir(parents=True)
    (tmp_path / 'no_tf' / name / '__init__.py').write_text(
        f'raise ImportError("{name} is not installed")\n')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path / 'no_tf'), str(root), os.environ.get('PYTHONPATH', '')]))
  out = tmp_path / 'results' / 'accelerator.json'
  # float32 and remat off only: each compile of a train step costs tens of seconds on the CPU.
  cmd = [sys.executable, '-m', 'diffbfr_jax.benchmarks.accelerator', f'--out={out}',
         '--size=smoke', '--dtype=float32', '--stages=irm1', '--remat=false',
         '--memory_limit_gib=64', '--max_batch=2', '--steps=1', '--chain_steps=2',
         '--chain_batch=1', '--degrade_batch=2', '--cascades=irm_s', '--cascade_batch=1',
         '--peak_tflops=1']
  done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  results = json.loads(out.read_text())
  assert results['device']['count'] >= 1 and results['versions']['jax']
  assert results['command'].startswith('python -m diffbfr_jax.benchmarks.accelerator')
  assert results['settings']['peak_tflops'] == 1 and not results['errors']
  train, = results['train']
  assert train['stage'] == 'irm1' and train['remat'] is False
  # The search is capped at --max_batch on a 64 GiB limit; the line it fitted grows with batch.
  assert train['per_device_batch'] == 2
  assert train['batch_search']['bytes_at_2'] > train['batch_search']['bytes_at_1'] > 0
  assert train['images_per_s'] > 0 and train['peak_memory_bytes'] > 0
  assert train['model_flops_per_image'] == train['flops_per_step'] / 2 > 0
  # MFU = model FLOPs per image x images per second per device / (1 TFLOP/s).
  assert train['mfu'] == pytest.approx(
      train['flops_per_step'] / train['step_s'] / 1e12) == pytest.approx(train['hfu'])
  chain, = results['chain']
  assert chain['stage'] == 'irm1' and chain['chain_step_ms'] > 0
  degrade, = results['degrade']
  assert degrade['stage'] == 'irm1' and degrade['per_device_batch'] == 2
  assert degrade['images_per_s_per_device'] == pytest.approx(2 / degrade['batch_s'])
  cascade, = results['cascade']
  assert cascade['evaluations'] == {'irm2': 2000} and cascade['seconds_per_face'] > 0
  assert '| irm1 | off | 2 |' in done.stdout  # the printed table


def test_accelerator_benchmark_counts_recomputation_in_hfu_not_mfu():
  from diffbfr_jax.benchmarks import accelerator  # pylint: disable=g-import-not-at-top

  row = dict(stage='irm2', per_device_batch=4, images_per_s_per_device=8.0)
  results = {'settings': {'peak_tflops': 100.0},
             'train': [dict(row, remat=False, flops_per_step=4e12),
                       dict(row, remat=True, flops_per_step=6e12)]}
  accelerator.add_utilisation(results)
  off, on = results['train']
  # 1 TFLOP per image x 8 images/s = 8 TFLOP/s of 100; remat's step does 1.5 TFLOP per image.
  assert off['mfu'] == pytest.approx(0.08) and off['hfu'] == pytest.approx(0.08)
  assert on['mfu'] == pytest.approx(0.08) and on['hfu'] == pytest.approx(0.12)
  results['settings']['peak_tflops'] = None
  accelerator.add_utilisation(results)
  assert results['train'][0]['mfu'] is None and results['train'][0]['hfu'] is None
