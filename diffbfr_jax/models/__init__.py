"""The DiffBFR networks: SR3's UNet for IRM-1 and IRM-2, guided-diffusion's ADM UNet for TEM."""

from diffbfr_jax.models.adm_unet import ADMUNet
from diffbfr_jax.models.sr3_unet import SR3UNet

# `config.model_type` picks the class; `config.model` holds exactly its constructor arguments.
MODELS = {'sr3': SR3UNet, 'adm': ADMUNet}
# What each network takes as time: SR3 the continuous noise level sqrt(gamma), ADM the step.
TIME_INPUT = {'sr3': 'noise_level', 'adm': 'step'}


def create_model(model_type: str, **model_config):
  """`create_model(config.model_type, **config.model)`; unknown fields fail here, by name."""
  if model_type not in MODELS:
    raise ValueError(f'config.model_type={model_type!r}; expected one of {sorted(MODELS)}.')
  return MODELS[model_type](**model_config)
