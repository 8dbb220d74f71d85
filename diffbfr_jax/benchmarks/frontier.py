r"""The speed/quality frontier of the cascade: network evaluations against restoration quality.

  python -m diffbfr_jax.benchmarks.frontier --workdir=runs/demo

Restores the demo's held-out faces (`<workdir>/test_set`, written by the demo job) with the
demo's trained stages (`<workdir>/irm1`, `irm2`, `tem`) along every chain of CHAINS, for each of
--seeds seeds (one sample per face and seed, keys as the demo's), and prints per chain the
network evaluations per face, the seconds per face (compiled chain, all faces in one batch,
median over the seeds) and PSNR / SSIM / LPIPS: the mean over faces and seeds, +- the standard
deviation of the per-seed means. Every chain uses the demo's sampling choices
(`configs/demo.py`'s `sampling`) unless the chain sets the field itself; `paper, Algorithm 1`
uses the stage configs' own (the paper's) samplers, and `fast` the chains of
`configs/cascade.py`'s `fast` preset. Writes `<workdir>/frontier.json`. Not run unless named
in --chains: the distilled chains (`distill8` ... `distill1`, the distill job's students in
--distilled, default `<workdir>/distill/<stage>`) and DDIM on their grids (`ddim_segment32`
... `ddim_segment1`; docs/distill.md).
"""

import json
import pathlib
import statistics
import time
import zlib

from absl import app
from absl import flags
import jax
import numpy as np

from diffbfr_jax import cascade
from diffbfr_jax import config_files
from diffbfr_jax import faces
from diffbfr_jax import parallel
from diffbfr_jax import rounds
from diffbfr_jax.jobs import demo

FLAGS = flags.FLAGS

_OFF = None  # a stage switched off in a chain
_PAPER = {'irm1': {}, 'irm2': {}, 'tem': {}}  # every step of the training grids


def _respaced(irm1: str, irm2: str, tem: str, **sampling) -> dict:
  """{stage: sampling fields}: each stage's respacing (irm1, irm2, tem), and `sampling` for all."""
  return {stage: dict(sampling, respacing=respacing)
          for stage, respacing in (('irm1', irm1), ('irm2', irm2), ('tem', tem))}


# name: (label, {stage: sampling fields on top of the demo's, or _OFF}). DDIM chains: each stage
# on a DDIM grid, eta 0, about 4:2:1 evaluations between the stages as the :fast preset.
CHAINS = {
    'paper': ("paper chains (2000 + 1000 + 100), the demo's samplers", _PAPER),
    'paper_alg1': ('paper chains, Algorithm 1 samplers', 'alg1'),
    'fast': ("configs/cascade.py's `fast` preset", 'fast'),
    'ancestral175': ('ancestral, 100 + 50 + 25', _respaced('100', '100', '250')),
    'ancestral300': ('ancestral, 170 + 85 + 43', _respaced('170', '170', '430')),
    'ddim100': ('DDIM, 56 + 28 + 15', _respaced('ddim56', 'ddim56', 'ddim143', sampler='ddim')),
    'ddim50': ('DDIM, 28 + 14 + 8', _respaced('ddim28', 'ddim28', 'ddim77', sampler='ddim')),
    'ddim25': ('DDIM, 14 + 7 + 4', _respaced('ddim14', 'ddim14', 'ddim40', sampler='ddim')),
    'ddim10': ('DDIM, 6 + 2 + 2', _respaced('ddim6', 'ddim4', 'ddim20', sampler='ddim')),
    'tem_only': ('TEM only: the LQ face diffused to N2 = 100, TEM (DifFace without its '
                 'estimator)', {'irm1': _OFF, 'irm2': _OFF, 'tem': {}}),
}
DEFAULT_CHAINS = list(CHAINS)
# DDIM (eta 0, clipped) on the distilled chains' grids with the stages as trained: what the
# distilled students are measured against at equal evaluations (32: the demo's first teacher).
CHAINS.update({f'ddim_segment{k}': (f'DDIM on the distilled grids, {k} + {k} + {k}',
                                    _respaced(*[f'segment{k}'] * 3, sampler='ddim', eta=0.0,
                                              clip_x0=True))
               for k in (32, 16, 8, 4, 2, 1)})
# The distilled cascade (configs/cascade.py's distillK presets): each stage the distill job's
# student of K steps, <--distilled>/<stage>/steps_K.
DISTILLED = {f'distill{k}': k for k in (8, 4, 2, 1)}
CHAINS.update({name: (f'distilled, {k} + {k} + {k} (DDIM, clipped)', 'distilled')
               for name, k in DISTILLED.items()})


def _define_flags():
  flags.DEFINE_string('workdir', 'runs/demo', 'The demo workdir: trained stages and test set.')
  flags.DEFINE_string('config', 'configs/demo.py', 'The demo config (its sampling choices).')
  flags.DEFINE_list('chains', DEFAULT_CHAINS, f'Chains to run, of {list(CHAINS)}.')
  flags.DEFINE_string('distilled', '', "The distill job's workdirs of the distilled chains, "
                      "one folder per stage ('' = <workdir>/distill).")
  flags.DEFINE_integer('seeds', 3, 'Seeds (one sample per face each).')


def chain_config(name: str, demo_config, root: pathlib.Path, distilled=None):
  """The cascade config of chain `name`: the demo's row tem_w (its sampling choices, every
  step of the training grids) with the chain's fields; a distilled chain's stages from
  `distilled` (the distill job's workdirs, one per stage; None: <root>/distill)."""
  _, stages = CHAINS[name]
  demo_config = demo_config.copy_and_resolve_references()
  demo_config.grids = 'fast' if stages == 'fast' else 'full'
  files = rounds.ConfigFiles(demo_config.config_dir, demo_config.networks)
  ccfg = demo.cascade_config(files, 'tem_w', demo_config, root)
  if stages == 'distilled':
    steps = DISTILLED[name]
    folder = pathlib.Path(distilled) if distilled else root / 'distill'
    for stage in cascade.STAGES:
      ccfg[stage].checkpoint = str(folder.absolute() / stage / f'steps_{steps}')
      ccfg[stage].sampling.update(respacing=f'segment{steps}', sampler='ddim', eta=0.0,
                                  clip_x0=True)
    return ccfg
  if stages == 'alg1':  # the stage configs' own samplers on the paper's grids
    paper = files.get('cascade')
    for stage in cascade.STAGES:
      ccfg[stage].sampling = paper[stage].sampling
  if isinstance(stages, str):
    return ccfg
  for stage, fields in stages.items():
    if fields is _OFF:
      ccfg[stage].enabled = False
    else:
      ccfg[stage].sampling.update(fields)
  return ccfg


def evaluations(name: str, demo_config, root: pathlib.Path, distilled=None) -> dict:
  """{stage: network evaluations per face} of chain `name`; a grid that does not fit fails here."""
  stages, _ = cascade.load(chain_config(name, demo_config, root, distilled))
  return {s.name: cascade.num_steps(s) for s in stages}


def measure(name: str, demo_config, root: pathlib.Path, names, lq, gt, seeds: int,
            distilled=None) -> dict:
  """{'evaluations', 'seconds_per_face', metric: (mean, spread)} of chain `name`."""
  stages, params = cascade.load(chain_config(name, demo_config, root, distilled))
  fn = jax.jit(cascade.make_cascade(stages))
  hashes = np.array([zlib.crc32(n.encode()) for n in names], np.uint32)
  batch = {'lq': lq.astype(np.float32) / 127.5 - 1.0}
  compiled = None
  per_seed, times = {'psnr': [], 'ssim': [], 'lpips': []}, []
  for seed in range(seeds):
    inputs = {**batch, 'key': faces.face_keys(seed, hashes, np.zeros_like(hashes))}
    if compiled is None:
      compiled = fn.lower(params, inputs).compile()
    t0 = time.perf_counter()
    output = jax.block_until_ready(compiled(params, inputs)['output'])
    times.append(time.perf_counter() - t0)
    images = faces.to_uint8(cascade.resize(output, gt.shape[1]))
    for metric, value in demo.scores(images, gt, demo_config.lpips_net).items():
      per_seed[metric].append(value)
  result = {'label': CHAINS[name][0],
            'evaluations': sum(cascade.num_steps(s) for s in stages),
            'stages': {s.name: cascade.num_steps(s) for s in stages},
            'seconds_per_face': statistics.median(times) / len(names)}
  for metric, values in per_seed.items():
    result[metric] = (float(np.mean(values)), float(np.std(values)))
  return result


def table(lq_scores: dict, results: dict) -> str:
  lines = ['| chain | evaluations per face | s per face | PSNR (dB) | SSIM | LPIPS |',
           '|---|---|---|---|---|---|',
           f'| LQ input | | | {lq_scores["psnr"]:.2f} | {lq_scores["ssim"]:.4f} | '
           f'{lq_scores["lpips"]:.4f} |']
  for r in results.values():
    cells = [f'{r["psnr"][0]:.2f} +- {r["psnr"][1]:.2f}',
             f'{r["ssim"][0]:.4f} +- {r["ssim"][1]:.4f}',
             f'{r["lpips"][0]:.4f} +- {r["lpips"][1]:.4f}']
    lines.append(f'| {r["label"]} | {r["evaluations"]} | {r["seconds_per_face"]:.3f} | '
                 + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  unknown = [c for c in FLAGS.chains if c not in CHAINS]
  if unknown:
    raise app.UsageError(f'--chains: unknown {unknown}; expected names of {list(CHAINS)}')
  demo_config = config_files.load(FLAGS.config)
  root = pathlib.Path(FLAGS.workdir).absolute()
  files = rounds.ConfigFiles(demo_config.config_dir, demo_config.networks)
  names, lq, gt = demo.held_out_faces(files, demo_config, root)
  lq_scores = demo.scores(lq, gt, demo_config.lpips_net)
  print(f'device: {parallel.device_label()}  faces: {len(names)} (32x32)  seeds: {FLAGS.seeds}  '
        f'stages: {root}', flush=True)
  for name in FLAGS.chains:  # every chain's grids checked before the first one runs
    evaluations(name, demo_config, root, FLAGS.distilled)
  results = {}
  for name in FLAGS.chains:
    t0 = time.perf_counter()
    results[name] = measure(name, demo_config, root, names, lq, gt, FLAGS.seeds,
                            FLAGS.distilled)
    print(f'{name}: {results[name]["evaluations"]} evaluations per face, '
          f'{time.perf_counter() - t0:.0f} s', flush=True)
    (root / 'frontier.json').write_text(json.dumps(  # after every chain: a crash loses none
        {'device': parallel.device_label(), 'seeds': FLAGS.seeds, 'lq': lq_scores,
         'chains': results}, indent=1))
  print(table(lq_scores, results))
  print(f'LPIPS-{demo_config.lpips_net}; lower is better. +- is the standard deviation of the '
        f'{FLAGS.seeds} per-seed means.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
