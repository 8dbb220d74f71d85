"""The full-reference metrics of a batch of restored faces against their ground truth: PSNR, SSIM
and LPIPS per image, as the evaluate and demo jobs report them."""

import numpy as np

from diffbfr_jax.metrics import lpips
from diffbfr_jax.metrics import psnr_ssim


def batch_metrics(metrics, x, y, *, y_channel: bool = False, lpips_net: str = 'vgg') -> dict:
  """{metric: [B] values} of the full-reference `metrics` (psnr, ssim, lpips) between two
  batches [B, H, W, 3] on the 0..255 scale."""
  values = {}
  if 'psnr' in metrics:
    values['psnr'] = np.asarray(psnr_ssim.psnr(x, y, y=y_channel))
  if 'ssim' in metrics:
    values['ssim'] = np.asarray(psnr_ssim.ssim(x, y, y=y_channel))
  if 'lpips' in metrics:
    values['lpips'] = np.asarray(lpips.lpips(x, y, net=lpips_net))
  return values
