"""Image-quality metrics of the paper's Table 1: PSNR, SSIM, LPIPS, NIQE and FID."""
