"""Training: every stage from main, exact resume, half-written checkpoints, NaN, microbatches,
and 8 devices against 1."""

import glob
import json
import os
import pathlib
import re
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
from diffbfr_jax import errors
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


def _run(workdir, num_steps, stage=irm2, **train_fields):
  config = stage.get_config('smoke')
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


@jax.custom_vjp
def _nan_gradient_if(params, bad):
  return params


def _nan_gradient_fwd(params, bad):
  return params, bad


def _nan_gradient_bwd(bad, grads):
  return jax.tree_util.tree_map(lambda g: jnp.where(bad, jnp.nan, g), grads), None


_nan_gradient_if.defvjp(_nan_gradient_fwd, _nan_gradient_bwd)


@pytest.mark.parametrize('num_steps', [6, 3])
def test_a_state_that_breaks_is_never_saved_and_never_pushes_a_good_one_out(tmp_path,
                                                                            monkeypatch,
                                                                            num_steps):
  """Step 3's update makes the parameters NaN while its own loss is finite (its gradient is
  poisoned). With a checkpoint every step and only one kept, step 2 must stay the checkpoint:
  the broken state is found by the loss of step 4 (6 steps) or, as the final state, by the
  check before its save (3 steps)."""
  make_loss_fn = train.make_loss_fn

  def poisoned(config, model, schedule):
    loss_fn = make_loss_fn(config, model, schedule)
    batch_size = config.train.batch_size

    def wrapped(params, batch, key):
      step3 = jnp.any((batch['id'] >= 2 * batch_size) & (batch['id'] < 3 * batch_size))
      return loss_fn(_nan_gradient_if(params, step3), batch, key)

    return wrapped

  monkeypatch.setattr(train, 'make_loss_fn', poisoned)
  message = (r'at step 4, computed with the parameters of step 3' if num_steps == 6 else
             r'computed with the parameters of step 3')
  with pytest.raises(errors.NonFiniteLossError,
                     match=message + r'\. The last good checkpoint is step 2 in .*checkpoints'):
    _run(tmp_path, num_steps, checkpoint_every=1, keep_checkpoints=1, log_every=100)
  monkeypatch.undo()
  assert checkpointing.Checkpointer(tmp_path).latest_step() == 2
  resumed = _run(tmp_path, 2)  # restores step 2 intact; nothing left to train
  assert int(resumed.step) == 2
  assert all(np.all(np.isfinite(x)) for x in _leaves(resumed))


def test_microbatches_give_the_same_step(tmp_path):
  # IRM-1's smoke network has dropout: its masks are keyed per example, as the diffusion draws.
  whole = _run(tmp_path / 'whole', 1, irm1, batch_size=4)
  sliced = _run(tmp_path / 'sliced', 1, irm1, batch_size=4, microbatches=2)
  for a, b in zip(_leaves(whole.params), _leaves(sliced.params)):
    # Adam divides by sqrt(v): summation-order noise in tiny gradients moves a parameter by a
    # small fraction of one step (lr = 1e-4), never more.
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_the_degradation_can_run_in_the_train_step(tmp_path):
  config = irm1.get_config('smoke')
  config.data.degrade_on = 'device'
  config.train.update(num_steps=2)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2 and checkpointing.Checkpointer(tmp_path).latest_step() == 2
  assert all(np.all(np.isfinite(x)) for x in _leaves(state.params))
  # What the step trained on: the stage's examples, built on the device from the faces.
  from diffbfr_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  dataset, _ = pipeline.from_config(config, start_step=0, process_index=0, process_count=1,
                                    local_devices=jax.local_device_count())
  batch = train.example_builder(config)(jax.tree_util.tree_map(np.asarray, next(iter(dataset))))
  assert set(batch) == {'cond', 'gt', 'id'}
  assert batch['cond'].shape == batch['gt'].shape == (1, 2, 16, 16, 3)
  assert float(jnp.abs(batch['cond'] - batch['gt']).mean()) > 0.01  # the LQ is degraded


_DEVICES_SCRIPT = '''
import sys
import jax, numpy as np
from configs import irm1
from diffbfr_jax import train
config = irm1.get_config('smoke')  # with dropout (0.1)
assert config.model.dropout > 0
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



@pytest.fixture(scope='module')
def irm2_workdir(tmp_path_factory):
  """An IRM-2 smoke run of 2 steps (a checkpoint of step 2), to resume with other configs."""
  workdir = tmp_path_factory.mktemp('irm2_run')
  _run(workdir, 2)
  return workdir


def _copy(workdir, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  return pathlib.Path(shutil.copytree(workdir, tmp_path / 'run'))


@pytest.mark.parametrize('change, listed', [
    # A wider network: the arrays would not fit.
    (lambda c: c.model.update(inner_channels=32),
     [r'config.model.inner_channels: 16 in the checkpoint, 32 in the config']),
    # Fewer blocks per level.
    (lambda c: c.model.update(res_blocks=0),
     [r'config.model.res_blocks: 1 in the checkpoint, 0 in the config']),
    # Another beta schedule: the same shapes, a different model.
    (lambda c: c.diffusion.schedule.update(beta_end=0.02),
     [r'config.diffusion.schedule.beta_end: 0.01 in the checkpoint, 0.02 in the config']),
    # Another stage's config.
    ('tem', [r"config.stage: irm2 in the checkpoint, tem in the config",
             r'config.model_type: sr3 in the checkpoint, adm in the config']),
])
def test_resuming_a_checkpoint_of_another_network_or_diffusion_stops_listing_each_field(
    irm2_workdir, tmp_path, change, listed):
  workdir = _copy(irm2_workdir, tmp_path)
  if change == 'tem':
    config = tem.get_config('smoke')
  else:
    config = irm2.get_config('smoke')
    change(config)
  config.train.num_steps = 3
  with pytest.raises(errors.CheckpointError) as e:
    train.train_and_evaluate(config, str(workdir))
  for field in listed:
    assert re.search(field, str(e.value)), str(e.value)
  # What a user most needs comes first: another stage, and else the first field that differs.
  head = str(e.value)[:400]
  if change == 'tem':
    assert 'is a irm2 checkpoint and the config trains tem: another stage' in head, head
  else:
    assert 'was trained with another config. 1 field differs: ' + listed[0].replace('\\', '') in head
  assert checkpointing.Checkpointer(workdir).latest_step() == 2  # nothing trained or saved


def test_resuming_with_another_rate_batch_or_period_is_allowed(irm2_workdir, tmp_path):
  workdir = _copy(irm2_workdir, tmp_path)
  state = _run(workdir, 3, learning_rate=3e-5, batch_size=4, checkpoint_every=7, log_every=1)
  assert int(state.step) == 3


def test_sigterm_saves_the_step_and_the_resumed_run_is_bit_identical(tmp_path):
  import signal  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / 'preempted'
  proc = subprocess.Popen(
      [sys.executable, '-m', 'diffbfr_jax.main', '--config=configs/irm2.py:smoke',
       '--config.train.num_steps=100000', '--config.train.checkpoint_every=100000', '--verbose',
       f'--workdir={workdir}'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      cwd=pathlib.Path(__file__).resolve().parent.parent)
  for line in proc.stderr:  # the handler is in place once this line is logged
    if 'Training irm2 from step 0' in line:
      break
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
  stopped = re.search(r'stopped by SIGTERM at step (\d+) of 100000; its checkpoint is saved in '
                      r'\S+checkpoints\. Run the same command to resume\.', err)
  assert stopped, err[-3000:]
  assert 'Traceback' not in err
  step = int(stopped.group(1))
  assert checkpointing.Checkpointer(workdir).latest_step() == step
  resumed = _run(workdir, step + 2)
  straight = _run(tmp_path / 'straight', step + 2)
  for a, b in zip(_leaves(straight), _leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_the_linear_decay_reaches_zero_at_the_last_step():
  """`train.lr_decay='linear'` (the distill job's): warm-up, then a straight line to 0."""
  config = irm2.get_config('smoke')
  config.train.update(learning_rate=1e-3, warmup_steps=10, num_steps=100, lr_decay='linear')
  tc = config.train
  _, schedule = train.make_optimizer(optimizer='adam', learning_rate=tc.learning_rate,
                                     warmup_steps=tc.warmup_steps, weight_decay=0.0,
                                     grad_clip=1.0, decay_steps=train.decay_steps(tc))
  for step in (0, 5, 10, 55, 99, 100):
    expected = 1e-3 * step / 10 if step < 10 else 1e-3 * (100 - step) / 90
    assert abs(float(schedule(step)) - expected) < 1e-9, step
