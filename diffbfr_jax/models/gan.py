"""The long-tail experiment's GAN networks (DCGAN-style, for 8x8 one-channel digits)."""

import flax.linen as nn
import jax.numpy as jnp


class Generator(nn.Module):
  """z [B, latent] -> [B, 8, 8, 1] on [-1, 1]: two dense layers to 4x4 features (most of the
  parameters, where they cost least), a transposed convolution to 8x8 and a convolution; batch
  norm and ReLU between them, as DCGAN's generator."""
  width: int  # channels of the 4x4 features; the 8x8 ones have a quarter
  hidden: int  # width of the first dense layer

  @nn.compact
  def __call__(self, z, train: bool = False):
    norm = lambda h: nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(h))
    h = norm(nn.Dense(self.hidden)(z))
    h = norm(nn.Dense(4 * 4 * self.width)(h)).reshape(z.shape[0], 4, 4, self.width)
    h = norm(nn.ConvTranspose(self.width // 4, (4, 4), strides=(2, 2))(h))
    return jnp.tanh(nn.Conv(1, (3, 3))(h))


class Discriminator(nn.Module):
  """[B, 8, 8, 1] -> [B] logits: two strided convolutions (8 -> 4 -> 2) and two dense layers,
  with leaky ReLU (0.2), as DCGAN's discriminator."""
  width: int  # channels of the 2x2 features; the 4x4 ones have half
  hidden: int

  @nn.compact
  def __call__(self, x):
    h = nn.leaky_relu(nn.Conv(self.width // 2, (4, 4), strides=(2, 2))(x), 0.2)
    h = nn.leaky_relu(nn.Conv(self.width, (4, 4), strides=(2, 2))(h), 0.2)
    h = nn.leaky_relu(nn.Dense(self.hidden)(h.reshape(x.shape[0], -1)), 0.2)
    return nn.Dense(1)(h)[:, 0]
