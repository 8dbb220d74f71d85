"""The paper's long-tail experiment (Sec. 4.2, Fig. 2): a DDPM and a GAN of about the same size,
trained on long-tailed digits; a classifier counts the classes of their samples.

`digits` holds the data, the classifier and the tables; `ddpm` the DDPM (this project's ADM UNet
with the diffusion module's schedule, loss and sampler); `gan` the GAN's losses and training step
(its networks are in models/gan.py); `training` the loop both train with, on the project's
checkpoints and good-state rule. The job is jobs/longtail.py.
"""
