"""The loop both long-tail models train with: a jitted step `step(state, images, key) -> (state,
metrics)` whose draws come from (key, state['step']), so a resumed run equals an uninterrupted
one; Orbax checkpoints through the project's `checkpointing.Checkpointer` (<folder>/checkpoints,
the last one kept) and its good-state rule (`checkpointing.GoodStates`: a state is saved only
once the losses computed with it came out finite and its arrays are all finite; a non-finite
loss stops the run naming the last good checkpoint)."""

import logging
import pathlib
import time

import jax
import numpy as np

from diffbfr_jax import checkpointing


def parameter_count(tree) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def trainable(state) -> dict:
  """The trained networks' parameters in a model's state (the DDPM's, the GAN's two)."""
  return {k: v for k, v in state.items() if k in ('params', 'g', 'd')}


def train(name: str, folder: pathlib.Path, init, step, images, key, num_steps: int, every: int,
          meta: dict):
  """Trains `step` to `num_steps` from the latest checkpoint under `folder` (or from `init`),
  saving every `every` steps and at the end (each with `meta`); returns the state."""
  ckpt = checkpointing.Checkpointer(folder, keep=1)
  good = checkpointing.GoodStates(ckpt, meta)
  state = init(jax.random.fold_in(key, 0))
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state)
  done = int(state['step'])
  if done >= num_steps:
    print(f'{name}: trained already ({done} steps) in {folder}', flush=True)
    ckpt.close()
    return state

  @jax.jit
  def checked_step(state, images, train_key):
    new, metrics = step(state, images, train_key)
    return new, metrics, checkpointing.all_finite(new)

  train_key, start = jax.random.fold_in(key, 1), time.perf_counter()
  print(f'{name}: training steps {done}..{num_steps}, {parameter_count(trainable(state)):,} '
        'parameters', flush=True)
  pending, due = [], None  # the steps' metrics not checked yet; (step, state, finite) to save

  def check(last: int):
    """Stops on a non-finite loss among the pending steps (the last is `last`)."""
    values = jax.device_get(pending)
    for offset, metrics in enumerate(values):
      for value in metrics.values():
        good.check_loss(float(value), last - len(values) + offset + 1)
    pending.clear()
    return values[-1] if values else {}

  try:
    while done < num_steps:
      new, metrics, finite = checked_step(state, images, train_key)
      pending.append(metrics)
      done += 1
      if due is not None:  # this step's losses used the due state's parameters
        check(done)
        good.save(*due)
        due = None
      state = new
      if done % every == 0 and done < num_steps:
        last = check(done)
        due = (done, state, finite)
        logging.info('%s: step %d, %s, %.0f s', name, done,
                     {k: float(v) for k, v in last.items()}, time.perf_counter() - start)
    check(done)
    # The final state: one more step computes the losses of its parameters (its update dropped).
    _, metrics, _ = checked_step(state, images, train_key)
    loss = float(sum(np.asarray(v, np.float64) for v in jax.device_get(metrics).values()))
    good.verify_and_save(done, state, checkpointing.all_finite(state), loss)
  finally:
    ckpt.wait()
    ckpt.close()
  print(f'    {name}: done in {time.perf_counter() - start:.0f} s', flush=True)
  return state
