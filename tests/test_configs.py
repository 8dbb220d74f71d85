"""Stage configs: every preset builds its network, and bad values fail by field name."""

import pytest

from configs import irm1
from configs import irm2
from configs import tem
from diffbfr_jax import config_checks
from diffbfr_jax import errors
from diffbfr_jax import models

STAGES = {'irm1': irm1.get_config, 'irm2': irm2.get_config, 'tem': tem.get_config}


@pytest.mark.parametrize('stage', sorted(STAGES))
@pytest.mark.parametrize('preset', [None, 'smoke', 'demo'])
def test_every_preset_builds_its_network(stage, preset):
  config = STAGES[stage](preset)
  assert config.stage == stage
  params = models.abstract_params(config)  # config.model is exactly the constructor's kwargs
  assert models.count_params(params) > 0


def test_table6_fields():
  c1, c2, c3 = irm1.get_config(), irm2.get_config(), tem.get_config()
  assert [c.model.image_size for c in (c1, c2, c3)] == [128, 512, 512]
  assert [c.diffusion.schedule.num_timesteps for c in (c1, c2, c3)] == [2000, 2000, 1000]
  assert (c1.diffusion.schedule.beta_start, c1.diffusion.schedule.beta_end) == (1e-6, 1e-2)
  assert (c3.diffusion.schedule.beta_start, c3.diffusion.schedule.beta_end) == (1e-4, 2e-2)
  assert [c.sampling.start_step for c in (c1, c2, c3)] == [2000, 1000, 100]
  assert tuple(c1.model.channel_mults) == (1, 2, 4, 8, 8)
  assert tuple(c2.model.channel_mults) == tuple(c3.model.channel_mult) == (1, 2, 4, 8, 8, 16, 16)
  assert (c1.model.in_channels, c1.model.out_channels) == (6, 3)
  assert (c3.model.in_channels, c3.model.out_channels) == (3, 6)
  assert [c1.model.inner_channels, c2.model.inner_channels, c3.model.model_channels] == [64, 64, 32]
  assert tuple(c1.model.attn_res) == tuple(c2.model.attn_res) == (16,)
  assert tuple(c3.model.attention_resolutions) == (32, 16, 8)
  assert {c.diffusion.loss.kind for c in (c1, c2, c3)} == {'l1'}


@pytest.mark.parametrize('field, value, message', [
    ('model.image_size', 100, r'config.model.image_size=100: must be divisible by 2\*\*'),
    ('model.attn_res', (12,), r'config.model.attn_res=\(12,\): resolution 12 is never reached'),
    ('model.norm_groups', 24, r'config.model.norm_groups=24'),
    ('model.in_channels', 3, r'config.model.in_channels=3: the SR3 UNet is conditional'),
    ('model.dtype', 'float16', r"config.model.dtype='float16'"),
    ('model.out_channels', 6, r"config.model.out_channels=6: sampling.variance='beta'"),
    ('sampling.start_step', 2001, r'config.sampling: start_step=2001 is outside \[0, 2000\]'),
    ('sampling.respacing', 'ddim1999', r"config.sampling: respacing='ddim1999': no integer stride"),
    ('sampling.variance', 'fixed', r"config.sampling.variance='fixed'"),
    ('job', 'sample', r"config.job='sample'"),
])
def test_bad_irm1_values_fail_by_field(field, value, message):
  config = irm1.get_config()
  section, _, name = field.rpartition('.')
  (config[section] if section else config)[name] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_checks.check_stage_config(config)


@pytest.mark.parametrize('field, value, message', [
    ('num_res_blocks', (1, 2), r'config.model.num_res_blocks=\(1, 2\): needs one count per level'),
    ('num_head_channels', 48, r'config.model.num_head_channels=48: must divide the width 256'),
    ('attention_resolutions', (1,), r'resolution 1 is never reached'),
])
def test_bad_tem_values_fail_by_field(field, value, message):
  config = tem.get_config()
  config.model[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    config_checks.check_stage_config(config)


def test_unknown_preset_is_named():
  with pytest.raises(ValueError, match="Unknown config preset 'tiny'"):
    tem.get_config('tiny')


def test_stages_and_the_cascade_share_one_preset_syntax():
  """Comma-separated names, one per group, in any order, for every config file."""
  from configs import cascade  # pylint: disable=g-import-not-at-top
  assert cascade.get_config('demo,fast').to_dict() == cascade.get_config('fast,demo').to_dict()
  assert tem.get_config('smoke,').to_dict() == tem.get_config('smoke').to_dict()
  for bad in ('fast,irm_c', 'smoke,demo'):  # two of one group
    with pytest.raises(ValueError, match='at most one of each group'):
      cascade.get_config(bad)
  with pytest.raises(ValueError, match="Unknown config preset 'fast'"):
    tem.get_config('fast')  # a cascade name is no stage preset


@pytest.mark.parametrize('preset', ['smoke', 'demo'])
def test_the_small_presets_share_their_data_and_training_fields(preset):
  """Set once in configs/common.py: the bundled faces at 32, each stage's faces at its network's
  size, and the same batch and steps for the three stages."""
  configs = [m.get_config(preset) for m in (irm1, irm2, tem)]
  for config in configs:
    assert config.data.source.kind == 'bundled' and config.data.source_size == 32
    assert config.data.image_size == config.model.image_size
  shared = {'smoke': ('batch_size', 'num_steps', 'learning_rate', 'log_every', 'checkpoint_every'),
            'demo': ('batch_size', 'num_steps', 'warmup_steps', 'ema_decay')}[preset]
  for field in shared:
    assert len({c.train[field] for c in configs}) == 1, field


def test_sub_dicts_are_locked_against_typos():
  config = irm1.get_config()
  config.lock()
  with pytest.raises(AttributeError):
    config.model.attn_resolution = (16,)
