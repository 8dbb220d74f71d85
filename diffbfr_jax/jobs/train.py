"""The train job: one DiffBFR stage trained in --workdir (configs/irm1.py, irm2.py, tem.py),
resumed from the workdir's latest checkpoint when there is one (`train.train_and_evaluate`).
Its summary: the stage, the step reached and the checkpoints' folder."""

from diffbfr_jax import config_checks
from diffbfr_jax import job_outputs
from diffbfr_jax import train


def run(config, workdir) -> dict:
  config_checks.check_stage_config(config)
  config_checks.check_data_source(config)
  workdir = job_outputs.workdir_folder(
      workdir, 'checkpoints and metrics (an existing one is resumed)')
  state = train.train_and_evaluate(config, str(workdir), progress=True)
  return job_outputs.write_summary(workdir, {
      'stage': config.stage, 'step': int(state.step), 'num_steps': config.train.num_steps,
      'checkpoints': str(workdir / 'checkpoints')})
