"""PyTorch checkpoints -> Flax: SR3 (IRM-1, IRM-2), ADM / DifFace (TEM), the FID Inception.

`torch_zip` reads PyTorch's zip files without torch and `state_dict` maps a state_dict onto a
stage's parameter tree; the convert job (jobs/convert.py) writes an Orbax checkpoint from it.
"""
