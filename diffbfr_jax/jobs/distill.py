"""The distill job (configs/distill.py): rounds of progressive distillation of one trained
stage's chain in --workdir, each round's student a stage checkpoint in `steps_<K>`
(diffbfr_jax/distill.py). Its summary: the stage, the teacher and each round's folder."""

from diffbfr_jax import config_checks
from diffbfr_jax import distill
from diffbfr_jax import job_outputs


def run(config, workdir) -> dict:
  config_checks.check_stage_config(config)
  config_checks.check_data_source(config)
  distill.check_config(config)
  workdir = job_outputs.workdir_folder(
      workdir, "each round's checkpoints (an existing one is resumed)")
  rounds = distill.run_rounds(config, workdir)
  return job_outputs.write_summary(workdir, {
      'stage': config.stage, 'teacher': config.distill.teacher,
      'prediction': config.distill.prediction, 'segment_start_step': config.sampling.start_step,
      'rounds': rounds})
