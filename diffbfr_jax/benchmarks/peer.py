r"""This project against the PyTorch SR3 code on the same machine, same networks, same batches.

  python -m diffbfr_jax.benchmarks.peer --sr3-root=PATH_TO_SR3_CHECKOUT [--rounds=2]

The peer is Janspiry's Image-Super-Resolution-via-Iterative-Refinement, unmodified, fetched by
the user (its `model/sr3_modules/unet.py` and `diffusion.py` are imported from the given
checkout; it needs torch and tqdm). Without --sr3-root only this project's figures are printed.

Cases (CASES), each timed in its own process, the peer's and ours alternated, --rounds times:

- `train_small`: one optimizer step of a small SR3 network (inner 32, mults 1,2,2, attention at
  16, 2 blocks, 32 px, conditional) at batch 16: Adam, SR3's L1 loss at one noise level per
  batch. The peer runs its `DDPM.optimize_parameters` (loss summed, divided by b*c*h*w, backward,
  Adam step); ours the project's pmapped train step (which also updates the EMA).
- `chain_small`: the same network's reverse chain at batch 4, 50 steps: the peer's
  `p_sample_loop` (progress bar off), ours the jitted `lax.fori_loop` chain with SR3's sampler
  (posterior variance, x_0 clipped).
- `forward_irm1`: one evaluation of the paper's IRM-1 network (128 px), batch 1 (the peer under
  `torch.no_grad()`).
- `train_irm1`: the paper IRM-1 train step at SR3's batch 4 (dropout 0.2, as SR3's config).

Each figure is the median of timed repetitions after warm-up (ours: after compilation); the
table shows the mean over rounds and ours / peer as a speed ratio (> 1: ours is faster).
Writes the per-round figures with --out=FILE (JSON).
"""

import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS

# SR3 UNet arguments (its own names, `model/sr3_modules/unet.py`'s UNet).
SMALL = dict(in_channel=6, out_channel=3, inner_channel=32, norm_groups=32, channel_mults=(1, 2, 2),
             attn_res=(16,), res_blocks=2, dropout=0.0, image_size=32)
IRM1 = dict(in_channel=6, out_channel=3, inner_channel=64, norm_groups=32,
            channel_mults=(1, 2, 4, 8, 8), attn_res=(16,), res_blocks=2, dropout=0.2,
            image_size=128)

# name: (label, kind, network, batch, unit, timed repetitions)
CASES = {
    'train_small': ('train step, small SR3 (inner 32, mults 1,2,2, attention at 16, 2 blocks, '
                    '32 px), batch 16', 'train', SMALL, 16, 'img/s', 20),
    'chain_small': ('reverse chain, same small network, batch 4, 50 steps', 'chain', SMALL, 4,
                    'ms/step', 5),
    'forward_irm1': ('IRM-1 paper network forward, 128 px, batch 1', 'forward', IRM1, 1, 's', 5),
    'train_irm1': ('IRM-1 paper train step, batch 4', 'train', IRM1, 4, 'img/s', 4),
}
CHAIN_STEPS = 50
# IRM-1's schedule (Table 6): T = 2000, betas linear from 1e-6 to 1e-2.
SCHEDULE = dict(schedule='linear', n_timestep=2000, linear_start=1e-6, linear_end=1e-2)


def _define_flags():
  flags.DEFINE_string('sr3-root', None, "A checkout of Janspiry's SR3 code (the peer).")
  flags.DEFINE_integer('rounds', 2, 'Rounds of all cases, peer and ours alternated.')
  flags.DEFINE_list('cases', list(CASES), f'Cases to run, of {list(CASES)}.')
  flags.DEFINE_integer('threads', 2, "The peer's torch threads (torch.set_num_threads).")
  flags.DEFINE_string('config_dir', 'configs', 'The folder of the stage configs (IRM-1 is used).')
  flags.DEFINE_string('out', None, 'Write every figure to this JSON file.')
  flags.DEFINE_enum('worker', None, ['ours', 'peer'], 'Internal: time one case in this process.')
  flags.DEFINE_string('case', None, 'Internal: the case a worker times.')


def _sr3_root():
  return FLAGS['sr3-root'].value


def _median_seconds(fn, repeats, warmup=1):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _figure(kind, batch, seconds):
  """The case's figure from the median seconds of one repetition."""
  if kind == 'train':
    return batch / seconds  # images per second
  if kind == 'chain':
    return 1e3 * seconds / CHAIN_STEPS  # ms per reverse step
  return seconds


def _speed(kind, peer, ours):
  """ours / peer as a speed: > 1 when ours is faster."""
  return ours / peer if kind == 'train' else peer / ours


# ----------------------------------------------------------------------------------- ours

def _our_config(net, batch, config_dir):
  from diffbfr_jax import config_files  # pylint: disable=g-import-not-at-top
  config = config_files.stage_config(config_dir, 'irm1')
  config.model.update(in_channels=net['in_channel'], out_channels=net['out_channel'],
                      inner_channels=net['inner_channel'], norm_groups=net['norm_groups'],
                      channel_mults=tuple(net['channel_mults']), attn_res=tuple(net['attn_res']),
                      res_blocks=net['res_blocks'], dropout=net['dropout'],
                      image_size=net['image_size'])
  config.train.update(batch_size=batch, optimizer='adam', learning_rate=1e-4, warmup_steps=0,
                      microbatches=1)
  config.diffusion.loss.update(kind='l1', per_example_t=False)
  config.sampling.update(variance='posterior', clip_x0=True)  # SR3's p_sample
  return config


def ours(name, config_dir='configs'):
  """Times one case with this project's code (the train-step and chain-overhead benchmarks);
  returns the case's figure."""
  from diffbfr_jax.benchmarks import chain_overhead  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.benchmarks import train_step  # pylint: disable=g-import-not-at-top

  _, kind, net, batch, _, repeats = CASES[name]
  config = _our_config(net, batch, config_dir)
  if kind == 'train':
    rate, _, _ = train_step.measure(config, steps=repeats)
    return rate
  steps = CHAIN_STEPS if kind == 'chain' else 1  # 'forward' times the bare evaluation only
  per_eval, per_step = chain_overhead.measure(config, steps=steps, batch=batch, repeats=repeats)
  return _figure(kind, batch, per_step * CHAIN_STEPS if kind == 'chain' else per_eval)


# ----------------------------------------------------------------------------------- peer

def _load(path, name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def peer_modules(root):
  """SR3's `unet` and `diffusion` modules, imported from a checkout."""
  folder = pathlib.Path(root) / 'model' / 'sr3_modules'
  for file in ('unet.py', 'diffusion.py'):
    if not (folder / file).is_file():
      raise FileNotFoundError(f'--sr3-root={root}: {folder / file} not found; give a checkout of '
                              'Janspiry/Image-Super-Resolution-via-Iterative-Refinement.')
  try:
    return (_load(folder / 'unet.py', 'sr3_peer_unet'),
            _load(folder / 'diffusion.py', 'sr3_peer_diffusion'))
  except ImportError as e:
    raise ImportError(f"the peer's code ({folder}) needs torch and tqdm: {e}") from e


def peer(name, root, threads):
  """Times one case with the peer's unmodified code; returns the case's figure."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  unet, diffusion = peer_modules(root)
  diffusion.tqdm = lambda iterable, **kwargs: iterable  # its progress bar off
  _, kind, net, batch, _, repeats = CASES[name]
  model = unet.UNet(**net)
  size = net['image_size']
  cond = torch.randn(batch, 3, size, size)
  x = torch.randn(batch, 3, size, size)
  if kind == 'forward':
    model.eval()
    level = torch.full((batch, 1), 0.5)

    def forward():
      with torch.no_grad():
        model(torch.cat([cond, x], dim=1), level)
    return _figure(kind, batch, _median_seconds(forward, repeats))

  ddpm = diffusion.GaussianDiffusion(model, image_size=size, channels=3, loss_type='l1',
                                     conditional=True)
  ddpm.set_loss('cpu')
  schedule = dict(SCHEDULE, n_timestep=CHAIN_STEPS) if kind == 'chain' else SCHEDULE
  ddpm.set_new_noise_schedule(schedule, 'cpu')
  if kind == 'chain':
    ddpm.eval()
    return _figure(kind, batch, _median_seconds(lambda: ddpm.super_resolution(cond), repeats))
  ddpm.train()
  optimizer = torch.optim.Adam(ddpm.parameters(), lr=1e-4)
  data = {'HR': x, 'SR': cond}

  def step():  # SR3's DDPM.optimize_parameters
    optimizer.zero_grad()
    loss = ddpm(data)
    loss = loss.sum() / int(x.numel())
    loss.backward()
    optimizer.step()
  return _figure(kind, batch, _median_seconds(step, repeats, warmup=2))


# ----------------------------------------------------------------------------------- driver

def _run_worker(who, name):
  args = [sys.executable, '-m', 'diffbfr_jax.benchmarks.peer', f'--worker={who}', f'--case={name}',
          f'--threads={FLAGS.threads}', f'--config_dir={FLAGS.config_dir}']
  if _sr3_root():
    args.append(f'--sr3-root={_sr3_root()}')
  env = dict(os.environ, TQDM_DISABLE='1')
  proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  if proc.returncode or not lines:
    raise RuntimeError(f'the {who} worker for {name} failed (exit {proc.returncode}):\n'
                       f'{proc.stderr[-3000:]}')
  return json.loads(lines[-1][len('RESULT '):])


def _versions():
  import jax  # pylint: disable=g-import-not-at-top
  out = {'python': platform.python_version(), 'jax': jax.__version__}
  if _sr3_root():
    import torch  # pylint: disable=g-import-not-at-top
    out['torch'] = torch.__version__
  return out


def table(results, cases):
  """The markdown table of `results` ({case: {'peer': [...], 'ours': [...]}})."""
  lines = ['| case | peer | ours | ours / peer speed |', '|---|---|---|---|']
  for name in cases:
    label, kind, _, _, unit, _ = CASES[name]
    ours_mean = statistics.fmean(results[name]['ours'])
    if results[name].get('peer'):
      peer_mean = statistics.fmean(results[name]['peer'])
      peer_cell, ratio = f'{peer_mean:.3g} {unit}', f'{_speed(kind, peer_mean, ours_mean):.2f}'
    else:
      peer_cell, ratio = '(no --sr3-root)', ''
    lines.append(f'| {label} | {peer_cell} | {ours_mean:.3g} {unit} | {ratio} |')
  return '\n'.join(lines)


def main(argv):
  del argv
  if FLAGS.worker:
    if FLAGS.case not in CASES:
      raise app.UsageError(f'--case={FLAGS.case!r}; expected one of {list(CASES)}.')
    figure = (ours(FLAGS.case, FLAGS.config_dir) if FLAGS.worker == 'ours'
              else peer(FLAGS.case, _sr3_root(), FLAGS.threads))
    print('RESULT ' + json.dumps(figure))
    return
  unknown = [c for c in FLAGS.cases if c not in CASES]
  if unknown:
    raise app.UsageError(f'--cases: unknown {unknown}; expected some of {list(CASES)}.')
  if _sr3_root():
    try:  # a wrong path stops here, before any timing
      peer_modules(_sr3_root())
    except (FileNotFoundError, ImportError) as e:
      raise app.UsageError(str(e)) from e
  results = {name: {'peer': [], 'ours': []} for name in FLAGS.cases}
  for r in range(FLAGS.rounds):
    for name in FLAGS.cases:
      order = ['peer', 'ours'] if r % 2 == 0 else ['ours', 'peer']
      for who in order:
        if who == 'peer' and not _sr3_root():
          continue
        results[name][who].append(_run_worker(who, name))
        print(f'round {r + 1}, {name}, {who}: {results[name][who][-1]:.4g} {CASES[name][4]}',
              flush=True)
  print(table(results, FLAGS.cases))
  print(f'rounds: {FLAGS.rounds}; peer torch threads: {FLAGS.threads}; float32; '
        f'{_versions()}')
  if FLAGS.out:
    record = {'command': ' '.join(sys.argv), 'date': datetime.date.today().isoformat(),
              'versions': _versions(), 'threads': FLAGS.threads, 'results': results}
    pathlib.Path(FLAGS.out).write_text(json.dumps(record, indent=1))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
