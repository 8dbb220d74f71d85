"""PyTorch checkpoints -> Flax: SR3 (IRM-1, IRM-2), ADM / DifFace (TEM), the FID Inception.

`torch_zip` reads PyTorch's zip files without torch, `state_dict` maps a state_dict onto a
stage's parameter tree, and `job` is the convert job that writes an Orbax checkpoint from it.
"""
