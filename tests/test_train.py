"""Training: every stage from main, exact resume, half-written checkpoints, NaN, microbatches,
and 8 devices against 1."""

import glob
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import irm1
from configs import irm2
from configs import tem
from diffbfr_jax import checkpointing
from diffbfr_jax import train


def _leaves(state):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(state)]


@pytest.mark.parametrize('get_config', [irm1.get_config, irm2.get_config, tem.get_config])
def test_every_smoke_stage_trains_from_main(get_config, smoke_runs):
  config = get_config('smoke')  # what the smoke_runs fixture ran through main.run
  workdir = smoke_runs[config.stage]
  assert glob.glob(str(workdir / 'events.out.tfevents.*'))
  ckpt = checkpointing.Checkpointer(workdir)
  assert ckpt.latest_step() == config.train.num_steps
  meta = json.loads((workdir / 'checkpoints' / '4' / 'meta' / 'metadata').read_text())
  assert meta['stage'] == config.stage and meta['model']['image_size'] == config.model.image_size


def _run(workdir, num_steps, **train_fields):
  config = irm2.get_config('smoke')
  config.train.update(num_steps=num_steps, **train_fields)
  return train.train_and_evaluate(config, str(workdir))


def test_stop_and_resume_is_bit_identical_to_a_straight_run(tmp_path):
  straight = _run(tmp_path / 'straight', 4)
  _run(tmp_path / 'resumed', 2)
  # A checkpoint that a killed save left half-written must be ignored.
  junk = tmp_path / 'resumed' / 'checkpoints' / '3.orbax-checkpoint-tmp' / 'state'
  junk.mkdir(parents=True)
  (junk / 'garbage').write_text('half written')
  assert checkpointing.Checkpointer(tmp_path / 'resumed').latest_step() == 2
  resumed = _run(tmp_path / 'resumed', 4)
  assert int(resumed.step) == 4
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                             monkeypatch):
  make_loss_fn = train.make_loss_fn

  def poisoned(config, model, schedule):
    loss_fn = make_loss_fn(config, model, schedule)

    def wrapped(params, batch, key, dropout_key):
      loss, aux = loss_fn(params, batch, key, dropout_key)
      # Examples of step 3 and later (global ids >= 3 * batch) make the loss NaN.
      bad = jnp.any(batch['id'] >= 3 * config.train.batch_size)
      return jnp.where(bad, jnp.nan, loss), aux

    return wrapped

  monkeypatch.setattr(train, 'make_loss_fn', poisoned)
  with pytest.raises(train.NonFiniteLossError,
                     match=r'at step 4\. The last good checkpoint is step 2 in .*checkpoints'):
    _run(tmp_path, 8)
  ckpt = checkpointing.Checkpointer(tmp_path)
  assert ckpt.latest_step() == 2
  monkeypatch.undo()
  resumed = _run(tmp_path, 2)  # restores step 2 intact; nothing left to train
  assert int(resumed.step) == 2
  assert all(np.all(np.isfinite(x)) for x in _leaves(resumed.params))


def test_microbatches_give_the_same_step(tmp_path):
  whole = _run(tmp_path / 'whole', 1, batch_size=4)
  sliced = _run(tmp_path / 'sliced', 1, batch_size=4, microbatches=2)
  for a, b in zip(_leaves(whole.params), _leaves(sliced.params)):
    # Adam divides by sqrt(v): summation-order noise in tiny gradients moves a parameter by a
    # small fraction of one step (lr = 1e-4), never more.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


_DEVICES_SCRIPT = '''
import sys
import jax, numpy as np
from configs import irm2
from diffbfr_jax import train
config = irm2.get_config('smoke')
config.train.update(batch_size=8, num_steps=3, checkpoint_every=100)
state = train.train_and_evaluate(config, sys.argv[1])
assert jax.local_device_count() == int(sys.argv[3]), jax.local_device_count()
np.savez(sys.argv[2], *[np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)])
'''


def test_eight_devices_train_like_one_device_with_the_same_global_batch(tmp_path):
  results = []
  for devices in (1, 8):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    out = tmp_path / f'params_{devices}.npz'
    proc = subprocess.run([sys.executable, '-c', _DEVICES_SCRIPT, str(tmp_path / f'wd{devices}'),
                           str(out), str(devices)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=pathlib.Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results.append(np.load(out))
  one, eight = results
  assert len(one.files) == len(eight.files) > 10
  for name in one.files:
    # Float tolerance as in the microbatch test: a small fraction of one Adam step (lr 1e-4).
    np.testing.assert_allclose(one[name], eight[name], rtol=0, atol=1e-5)



_PROCESS_SCRIPT = '''
import sys
import jax, numpy as np
from configs import irm2
from diffbfr_jax import train
workdir, out, port, pid = sys.argv[1:5]
config = irm2.get_config('smoke')
config.train.update(batch_size=4, num_steps=2, checkpoint_every=100)
config.distributed.update(coordinator_address=f'localhost:{port}', num_processes=2,
                          process_id=int(pid))
state = train.train_and_evaluate(config, workdir)
assert jax.process_count() == 2 and jax.device_count() == 2
np.savez(out, *[np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)])
'''


def test_two_processes_train_to_identical_parameters(tmp_path):
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo', JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen(
      [sys.executable, '-c', _PROCESS_SCRIPT, str(tmp_path / 'wd'), str(tmp_path / f'p{i}.npz'),
       str(port), str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      cwd=pathlib.Path(__file__).resolve().parent.parent) for i in (0, 1)]
  for proc in procs:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
  p0, p1 = np.load(tmp_path / 'p0.npz'), np.load(tmp_path / 'p1.npz')
  for name in p0.files:
    np.testing.assert_array_equal(p0[name], p1[name])
  assert checkpointing.Checkpointer(tmp_path / 'wd').latest_step() == 2
