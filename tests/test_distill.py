"""The distill job through main: rounds, their checkpoints' meta, a resume bit-equal to a straight
run, refusals, and the distilled cascade presets' network evaluations."""

import shutil

import jax
import numpy as np
import pytest

from configs import cascade as cascade_configs
from configs import distill as distill_configs
from diffbfr_jax import cascade
from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import main
from diffbfr_jax import models


def _config(teacher, **distill):
  config = distill_configs.get_config('irm2,smoke')
  config.distill.update(teacher=str(teacher), start_steps=4, steps_per_round=4, prediction='v')
  config.distill.update(distill)
  config.train.checkpoint_every = 2
  return config


def _params(folder):
  config = distill_configs.get_config('irm2,smoke')
  found = checkpointing.find(folder)
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(checkpointing.restore_params(
      *found, models.abstract_params(config), item='params'))]


@pytest.fixture(scope='module')
def straight(smoke_run, tmp_path_factory):
  """Two rounds (4 -> 2 -> 1 steps) of the smoke IRM-2, 4 optimizer steps each, uninterrupted."""
  workdir = tmp_path_factory.mktemp('distill') / 'straight'
  summary = main.run(_config(smoke_run('irm2')), str(workdir))
  return workdir, summary


def test_each_round_is_a_stage_checkpoint_that_records_its_teacher(straight, smoke_run):
  workdir, summary = straight
  assert [(r['round'], r['steps'], r['teacher_steps'], r['optimizer_steps'])
          for r in summary['rounds']] == [(1, 2, 4, 4), (2, 1, 2, 4)]
  first = checkpointing.read_meta(*checkpointing.find(workdir / 'steps_2'))
  second = checkpointing.read_meta(*checkpointing.find(workdir / 'steps_1'))
  assert first['stage'] == 'irm2' and first['prediction'] == 'v'
  teacher_folder, teacher_step = checkpointing.find(smoke_run('irm2'))
  assert first['distill']['teacher'] == str(teacher_folder)
  assert first['distill']['teacher_step'] == teacher_step
  assert second['distill']['teacher'] == str(workdir / 'steps_2' / 'checkpoints')
  assert (second['distill']['steps'], second['distill']['start_step']) == (1, 1000)
  # The student started from the teacher and was trained: its weights moved.
  teacher = _params(smoke_run('irm2'))
  assert any(not np.array_equal(a, b) for a, b in zip(teacher, _params(workdir / 'steps_2')))


def test_a_resumed_distillation_is_bit_equal_to_a_straight_one(straight, smoke_run, tmp_path):
  workdir, _ = straight
  resumed = tmp_path / 'resumed'
  # Round 1 only, then cut back to its step-2 checkpoint (a run killed after that save).
  main.run(_config(smoke_run('irm2'), end_steps=2), str(resumed))
  shutil.rmtree(resumed / 'steps_2' / 'checkpoints' / '4')
  assert not (resumed / 'steps_1').exists()
  main.run(_config(smoke_run('irm2')), str(resumed))  # round 1 from step 2, then round 2
  shutil.rmtree(resumed / 'steps_1' / 'checkpoints' / '4')
  summary = main.run(_config(smoke_run('irm2')), str(resumed))  # round 2 from step 2
  assert [r['optimizer_steps'] for r in summary['rounds']] == [4, 4]
  for name in ('steps_2', 'steps_1'):
    for a, b in zip(_params(workdir / name), _params(resumed / name)):
      np.testing.assert_array_equal(a, b)


def test_a_finished_round_with_other_settings_is_refused(straight, smoke_run):
  workdir, _ = straight
  with pytest.raises(errors.CheckpointError, match=r'config\.prediction: v in the checkpoint, '
                                                   r'eps in the config'):
    main.run(_config(smoke_run('irm2'), prediction='eps'), str(workdir))


@pytest.mark.parametrize('field, value, message', [
    ('teacher', '', 'config.distill.teacher is empty'),
    ('start_steps', 6, 'config.distill.start_steps=6: must be end_steps'),
    ('start_steps', 2048, 'start_steps=2048 is more than the steps of the segment'),
    ('prediction', 'x', "config.distill.prediction='x'"),
    ('weighting', 'snr', "config.distill.weighting='snr'"),
])
def test_bad_distill_fields_are_named_before_any_compute(field, value, message, tmp_path):
  config = _config('unused')
  config.distill[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    main.run(config, str(tmp_path / 'w'))
  assert not (tmp_path / 'w' / 'steps_2').exists()


def test_a_teacher_of_another_stage_is_refused(smoke_run, tmp_path):
  with pytest.raises(errors.CheckpointError, match='irm1 checkpoint'):
    main.run(_config(smoke_run('irm1')), str(tmp_path / 'w'))


@pytest.mark.parametrize('preset, per_stage', [('distill2', 2), ('distill1', 1)])
def test_the_distilled_presets_make_three_k_network_evaluations_per_face(preset, per_stage,
                                                                         straight, smoke_run):
  """Counted by running the cascade without jit (each loop a Python loop) and counting the
  networks' calls: K per stage, the distilled IRM-2 sampled as the v-predictor it is."""
  workdir, _ = straight
  config = cascade_configs.get_config(f'{preset},smoke')
  config.irm1.checkpoint = str(smoke_run('irm1'))
  config.irm2.checkpoint = str(workdir / f'steps_{per_stage}')
  config.tem.checkpoint = str(smoke_run('tem'))
  stages, params = cascade.load(config)
  assert [s.prediction for s in stages] == ['eps', 'v', 'eps']
  calls = {s.name: 0 for s in stages}

  def counting(stage):
    def apply(*args):
      calls[stage.name] += 1
      return stage.apply(*args)
    return stage._replace(apply=apply)

  restore = cascade.make_cascade([counting(s) for s in stages])
  batch = {'lq': np.zeros((1, 32, 32, 3), np.float32), 'key': jax.random.split(
      jax.random.key(0), 1)}
  with jax.disable_jit():
    out = restore(params, batch)['output']
  assert calls == {'irm1': per_stage, 'irm2': per_stage, 'tem': per_stage}
  assert sum(cascade.num_steps(s) for s in stages) == 3 * per_stage
  assert np.all(np.isfinite(np.asarray(out)))


def test_a_student_sampled_over_another_segment_is_refused(straight, smoke_run):
  workdir, _ = straight
  config = cascade_configs.get_config('distill1,smoke')
  config.irm1.checkpoint = str(smoke_run('irm1'))
  config.irm2.checkpoint = str(workdir / 'steps_1')
  config.tem.enabled = False
  config.irm2.sampling.update(from_noise=True, start_step=2000)  # IRM-c's chain
  with pytest.raises(errors.ConfigError, match=r'config\.irm2\.sampling\.start_step=2000, but '
                                               r'.*steps_1 was distilled over the chain with '
                                               r'start_step=1000'):
    cascade.load(config)


def test_the_sample_jobs_distilled_chains_run_k_steps_from_noise():
  from configs import sample as sample_configs  # pylint: disable=g-import-not-at-top
  from configs import tem  # pylint: disable=g-import-not-at-top
  stage_config = tem.get_config('smoke')
  for preset, steps in (('distill4', 4), ('distill1', 1)):
    sampling = sample_configs.get_config(f'{preset},smoke').tem.sampling
    stage = cascade.build_stage('tem', stage_config.model_type, stage_config.model,
                                stage_config.diffusion, sampling)
    assert cascade.num_steps(stage) == steps
    assert (sampling.from_noise, sampling.start_step, sampling.sampler) == (True, 1000, 'ddim')
