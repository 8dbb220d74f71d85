"""The `main` entry point, run as users run it."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import pytest

from configs import irm2
from diffbfr_jax import models

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _main(*args):
  return subprocess.run([sys.executable, '-m', 'diffbfr_jax.main', *args], capture_output=True,
                        text=True, timeout=300)


def test_summary_job_prints_the_parameter_count_of_the_real_network():
  result = _main('--config=configs/irm2.py:smoke', '--config.job=summary')
  assert result.returncode == 0, result.stderr
  printed = int(re.search(r'total parameters: ([\d,]+)', result.stdout).group(1).replace(',', ''))
  # Independent count: initialise the real network (with memory) and add up its arrays.
  config = irm2.get_config('smoke')
  model = models.create_model(config.model_type, **config.model)
  x = jax.numpy.zeros((1, 32, 32, 3))
  params = jax.jit(model.init)(jax.random.key(0), x, jax.numpy.zeros(1), x)['params']
  assert printed == sum(p.size for p in jax.tree_util.tree_leaves(params))


def test_overrides_are_checked_and_the_error_names_the_field():
  result = _main('--config=configs/tem.py:demo', '--config.job=summary',
                 '--config.model.image_size=30')
  assert result.returncode != 0
  assert 'config.model.image_size=30' in result.stderr
  assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('args, message', [
    ((), '--config'),
    (('--config=configs/tem.py', '--config.model.attn_res=(16,)'), 'attn_res'),
])
def test_usage_errors(args, message):
  result = _main(*args)
  assert result.returncode != 0
  assert message in result.stderr


_SMOKE_TRAIN = ('--config=configs/tem.py:smoke',)


@pytest.mark.parametrize('args, devices, named', [
    (_SMOKE_TRAIN + ('--config.train.nonexistent=1',), 1, '--config.train.nonexistent=1'),
    (('--config=configs/nope.py',), 1, "--config=configs/nope.py: the config file 'configs/nope.py'"),
    (('--config=configs/tem.py:smok',), 1, "--config=configs/tem.py:smok: Unknown config preset 'smok'"),
    # tem:smoke trains a global batch of 2: it cannot split over 8 devices, nor 1 device's 2
    # examples into 3 microbatches.
    (_SMOKE_TRAIN, 8, 'config.train.batch_size=2: the global batch must split evenly over 8'),
    (_SMOKE_TRAIN + ('--config.train.microbatches=3',), 1,
     'config.train.microbatches=3: must divide the per-device batch of 2'),
    (_SMOKE_TRAIN + ('--config.train.checkpoint_every=0',), 1, 'config.train.checkpoint_every=0'),
    (_SMOKE_TRAIN + ('--config.train.log_every=0',), 1, 'config.train.log_every=0'),
    (_SMOKE_TRAIN + ('--config.train.batch_size=0',), 1, 'config.train.batch_size=0'),
])
def test_a_user_mistake_stops_before_any_compute_with_one_error_line(tmp_path, args, devices,
                                                                   named):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  workdir = tmp_path / 'run'
  result = subprocess.run([sys.executable, '-m', 'diffbfr_jax.main', *args,
                           f'--workdir={workdir}'], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
  assert result.returncode == 1, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and named in last, last
  assert not (workdir / 'checkpoints').exists()  # nothing was built or trained


def test_jobs_take_relative_paths_from_the_folder_they_run_in(tmp_path):
  """The README's commands as written: relative --workdir, checkpoint and input folders, run
  from another folder than the repository's (configs/ linked there, the package on the path)."""
  (tmp_path / 'configs').symlink_to(ROOT / 'configs')
  (tmp_path / 'lq').mkdir()
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24, 3), np.uint8)).save(
      tmp_path / 'lq' / 'face.png')
  env = dict(os.environ, PYTHONPATH=str(ROOT))

  def main(*args):
    result = subprocess.run([sys.executable, '-m', 'diffbfr_jax.main', *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

  main('--config=configs/irm2.py:smoke', '--config.train.num_steps=2', '--workdir=runs/irm2')
  assert (tmp_path / 'runs' / 'irm2' / 'checkpoints' / '2').is_dir()
  main('--config=configs/cascade.py:irm_s,smoke', '--config.irm2.checkpoint=runs/irm2',
       '--config.irm2.sampling.respacing=4', '--config.input_dir=lq', '--workdir=runs/restored')
  restored = np.asarray(Image.open(tmp_path / 'runs' / 'restored' / 'face.png'))
  assert restored.shape == (32, 32, 3)


def test_a_profile_of_training_steps_is_written_for_tensorboard(tmp_path):
  from configs import tem  # pylint: disable=g-import-not-at-top
  from diffbfr_jax import main  # pylint: disable=g-import-not-at-top

  config = tem.get_config('smoke')
  config.train.profile_steps = (2, 3)
  main.run(config, str(tmp_path))
  (run,) = (tmp_path / 'plugins' / 'profile').iterdir()  # TensorBoard's profile plugin folder
  assert any(p.name.endswith('.xplane.pb') and p.stat().st_size > 0 for p in run.iterdir())

  config.train.update(profile_steps=(3, 2), num_steps=6)
  with pytest.raises(ValueError, match=r'config.train.profile_steps=\(3, 2\)'):
    main.run(config, str(tmp_path))


def test_the_terminal_shows_progress_and_the_result_and_the_full_log_goes_to_the_workdir(
    tmp_path):
  workdir = tmp_path / 'run'
  result = _main('--config=configs/irm2.py:smoke', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  absl_info = re.compile(r'^I\d{4} [\d:.]+ +\d+ \S+\.py:\d+\]', re.M)  # Python's absl INFO
  assert not absl_info.search(result.stderr), result.stderr[-3000:]
  assert result.stdout.splitlines() == [
      f'train: full log in {workdir / "log.txt"} (--verbose prints it here too)',
      f'Training irm2 from step 0 to 4 in {workdir} (compiling the step first)',
      *[line for line in result.stdout.splitlines() if line.startswith('irm2 step ')],
      f'Trained irm2 to step 4; checkpoints in {workdir / "checkpoints"}']
  assert [line.split(':')[0] for line in result.stdout.splitlines()
          if line.startswith('irm2 step ')] == ['irm2 step 2/4', 'irm2 step 4/4']
  log = (workdir / 'log.txt').read_text()
  assert len(absl_info.findall(log)) > 20 and 'irm2 parameters' in log  # the full log
  verbose = _main('--config=configs/irm2.py:smoke', f'--workdir={workdir}',
                  '--config.train.num_steps=6', '--verbose')
  assert verbose.returncode == 0, verbose.stderr[-3000:]
  assert 'Resumed from the checkpoint of step 4' in verbose.stderr
  assert 'Resumed from the checkpoint of step 4' in (workdir / 'log.txt').read_text()
