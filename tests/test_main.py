"""The `main` entry point, run as users run it."""

import re
import subprocess
import sys

import jax
import pytest

from configs import irm2
from diffbfr_jax import models


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
