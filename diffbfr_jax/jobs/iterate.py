"""The iterate job: rounds of train -> clean -> train again (IDM's extrinsic enhancement), each
round scored on one held-out test set.

Round 0 trains the stages (or takes trained ones, `start_from`) on the given faces; round r
trains on the set round r-1's stages cleaned (the clean job), from scratch or going on from
round r-1's state. Every round restores the held-out LQ faces with its stages (the restore job),
scores them against the ground truth (the evaluate job), and draws TEM samples whose FID is taken
against round 0's training faces (the sample job), so the rounds are compared on equal terms.
Each part is skipped when its outputs are complete and were made from the same settings (the
checkpoints' steps, the chains, the metrics, the seeds: `resume`), and made again otherwise, so
the same command goes on after a stop and a changed command never reports an earlier run's
scores.

Layout under the workdir: train_faces/ and test_set/ (with 'bundled'), fid_cache/, and per
round round_<r>/: <stage>/ (training workdirs), restored/, eval/, samples/, cleaned/ (the next
round's faces), table.md and results.json; all rounds in table.md and summary.json.
"""

import json
import pathlib
import time

from diffbfr_jax import cascade
from diffbfr_jax import checkpointing
from diffbfr_jax import errors
from diffbfr_jax import job_outputs
from diffbfr_jax import parallel
from diffbfr_jax import paths
from diffbfr_jax import resume
from diffbfr_jax import rounds
from diffbfr_jax.errors import ConfigError

MODES = ('scratch', 'finetune')
CLEANERS = ('tem', 'cascade')
CHAINS = ('fast', 'full')


def stages_of(config) -> list:
  names = [s.strip() for s in config.stages.split(',') if s.strip()]
  if not names or any(n not in cascade.STAGES for n in names) or len(set(names)) != len(names):
    raise ConfigError(f'config.stages={config.stages!r}: expected a comma-separated list of '
                      f'distinct stages from {cascade.STAGES}')
  return sorted(names, key=cascade.STAGES.index)


def check_config(config, workdir) -> list:
  if not workdir:
    raise ConfigError('--workdir is required: every round is written into it')
  stages = stages_of(config)
  for field, allowed in (('mode', MODES), ('cleaner', CLEANERS), ('chains', CHAINS)):
    if config[field] not in allowed:
      raise ConfigError(f'config.{field}={config[field]!r}: expected one of {allowed}')
  if config.cleaner == 'tem' and 'tem' not in stages:
    raise ConfigError(f"config.cleaner='tem' needs TEM among config.stages={config.stages!r} "
                      "(or clean with config.cleaner='cascade')")
  if config.num_samples and 'tem' not in stages:
    raise ConfigError(f'config.num_samples={config.num_samples}: samples are TEM\'s, and '
                      f'config.stages={config.stages!r} has no tem (set num_samples=0)')
  if config.rounds < 0 or config.num_samples < 0 or config.batch_size < 1:
    raise ConfigError('config.rounds and config.num_samples must be 0 or more and '
                      f'config.batch_size at least 1 (got {config.rounds}, {config.num_samples}, '
                      f'{config.batch_size})')
  for field in ('train_faces', 'test_set'):
    if not config[field]:
      raise ConfigError(f"config.{field} is empty: give a folder (or 'bundled', the faces that "
                        'ship with scikit-image)')
  for name in stages:
    if config.mode == 'finetune' and config.rounds and config.finetune_steps[name] < 1:
      raise ConfigError(f'config.finetune_steps.{name}={config.finetune_steps[name]}: '
                        "mode='finetune' needs at least one step per stage and round")
  return stages


def train_round(files, config, stages, r: int, faces: pathlib.Path,
                root: pathlib.Path) -> dict:
  """{stage: its trained workdir} of round r, training what is not trained yet."""
  folders = {}
  for name in stages:
    if r == 0 and config.start_from[name]:
      folders[name] = pathlib.Path(config.start_from[name])
      _, step = checkpointing.find(folders[name])  # a missing checkpoint stops here
      print(f'round 0, {name}: trained already, step {step} of {folders[name]}', flush=True)
      continue
    folder = root / f'round_{r}' / name
    stage = rounds.stage_config(files, name, seed=config.seed, steps=config.steps[name],
                                faces=faces)
    if config.mode == 'finetune' and r > 0:
      previous, step = checkpointing.find(root / f'round_{r - 1}' / name
                                          if r > 1 or not config.start_from[name]
                                          else config.start_from[name])
      stage.train.num_steps = step + config.finetune_steps[name]
      # Go on from round r-1's state, copied here the first time. Process 0 decides and copies,
      # so that no process sees a copy half made.
      parallel.on_main_process(f'iterate: round {r} {name} copied', rounds.copy_checkpoint,
                               previous / str(step), folder / 'checkpoints')
    folders[name] = folder
    rounds.train_unless_trained(f'round {r}, {name}', stage, folder)
  return folders


def _chained(files, config, ccfg, folders) -> None:
  """`rounds.chain` with this job's weights, chains and sampling, batch size and seed."""
  rounds.chain(ccfg, folders, fast=files.get('cascade', 'fast') if config.chains == 'fast' else None,
               params=config.params, sampling=config.sampling)
  ccfg.batch_size = config.batch_size
  ccfg.seed = config.seed


def _last_size(files, folders) -> int:
  return files.get(max(folders, key=cascade.STAGES.index)).model.image_size


def evaluate_round(files, config, folders, test_dir: pathlib.Path, reference: pathlib.Path,
                   out: pathlib.Path) -> dict:
  """{metric: mean} of the round's restorations of the held-out faces, with 'fid_samples' (TEM's
  samples against `reference`) when config.num_samples."""
  from diffbfr_jax.jobs import restore  # pylint: disable=g-import-not-at-top
  from diffbfr_jax.jobs import sample  # pylint: disable=g-import-not-at-top

  results = {}
  steps = {name: checkpointing.find(folder)[1] for name, folder in folders.items()}
  summary_file = out / 'eval' / 'summary.json'
  ccfg = files.get('cascade')
  _chained(files, config, ccfg, folders)
  ccfg.update(input_dir=str(test_dir / 'lq'), output_dir=str(out / 'restored'),
              overwrite=True, image_size=_last_size(files, folders))
  ecfg = files.get('evaluate')
  ecfg.update(restored_dir=str(out / 'restored'), gt_dir=str(test_dir / 'gt'),
              output_dir=str(out / 'eval'), metrics=tuple(config.metrics),
              fid_cache_dir=str(out.parent / 'fid_cache'), batch_size=config.batch_size)
  made_from = {'steps': steps, 'restore': _settings(ccfg), 'evaluate': _settings(ecfg),
               'test_set': _test_set_record(test_dir)}
  if not (summary_file.exists() and resume.reusable(out / 'eval', made_from, 'the scores')):
    restore.run(ccfg, None)
    parallel.on_main_process('iterate: evaluated', _evaluate, ecfg, out / 'eval', made_from)
  saved = json.loads(summary_file.read_text())
  results.update(saved['means'])
  if 'fid' in saved:
    results['fid'] = saved['fid']
  if config.num_samples:
    samples_file = out / 'samples' / 'summary.json'
    scfg = files.get('sample', 'fast' if config.chains == 'fast' else '')
    scfg.tem.update(checkpoint=str(folders['tem']), params=config.params)
    scfg.tem.sampling.update(config.sampling.tem)
    scfg.update(output_dir=str(out / 'samples'), overwrite=True, seed=config.seed,
                num_samples=config.num_samples, batch_size=config.batch_size,
                grid_count=min(64, config.num_samples), reference_dir=str(reference),
                fid_cache_dir=str(out.parent / 'fid_cache'))
    made_from = {'step': steps['tem'], 'sample': _settings(scfg)}
    if not (samples_file.exists() and resume.reusable(out / 'samples', made_from, 'the samples')):
      sample.run(scfg, None)
      parallel.on_main_process('iterate: samples recorded', resume.record, out / 'samples',
                               made_from)
    results['fid_samples'] = json.loads(samples_file.read_text())['fid']
  return results


def _test_set_record(test_dir: pathlib.Path) -> dict:
  """The test set as its maker recorded it (make_test_set's manifest without its per-image
  list, and this job's settings of a bundled set)."""
  manifest = test_dir / 'manifest.json'
  made = json.loads(manifest.read_text()) if manifest.is_file() else {}
  return {'folder': str(test_dir), 'made_from': resume.stored(test_dir),
          'manifest': {k: v for k, v in made.items() if not isinstance(v, list)}}


def _settings(job_config) -> dict:
  """A job config's fields that make its outputs (not where or how fast it compiles)."""
  return {k: v for k, v in job_config.to_dict().items()
          if k not in ('distributed', 'compilation_cache_dir')}


def _evaluate(ecfg, folder: pathlib.Path, made_from: dict) -> None:
  from diffbfr_jax.jobs import evaluate  # pylint: disable=g-import-not-at-top

  evaluate.run(ecfg, None)
  resume.record(folder, made_from)


def clean_round(files, config, folders, faces: pathlib.Path, out: pathlib.Path) -> dict:
  """The clean job on `faces` with the round's stages; its summary."""
  from diffbfr_jax.jobs import clean  # pylint: disable=g-import-not-at-top

  ccfg = files.get('clean', 'tem' if config.cleaner == 'tem' else '')
  used = {'tem': folders['tem']} if config.cleaner == 'tem' else folders
  _chained(files, config, ccfg, used)
  ccfg.update(input_dir=str(faces), output_dir=str(out), select=config.select,
              niqe_threshold=config.niqe_threshold, image_size=_last_size(files, used))
  return clean.run(ccfg, None)


def training_faces(files, config, root: pathlib.Path, stages) -> pathlib.Path:
  if config.train_faces != 'bundled':
    return pathlib.Path(config.train_faces)
  from diffbfr_jax.data import sources  # pylint: disable=g-import-not-at-top

  size = files.get(stages[0]).data.source_size
  parallel.on_main_process('iterate: training faces written', sources.write_bundled_faces,
                           'train', size, root / 'train_faces')
  return root / 'train_faces'


def test_set(files, config, root: pathlib.Path, stages) -> pathlib.Path:
  if config.test_set != 'bundled':
    folder = pathlib.Path(config.test_set)
    if not (folder / 'lq').is_dir() or not (folder / 'gt').is_dir():
      raise errors.NotFound(f'config.test_set={config.test_set!r}: expected a make_test_set '
                            'folder with lq/ and gt/')
    return folder
  stage = files.get(stages[-1])
  return rounds.held_out_set(root / 'test_set', size=stage.model.image_size,
                             seed=config.test_seed, degradation=stage.data.degradation)


COLUMNS = (('psnr', 'PSNR (dB)', 2), ('ssim', 'SSIM', 4), ('lpips', 'LPIPS', 4),
           ('niqe', 'NIQE', 4), ('fid', 'FID (restored)', 2),
           ('fid_samples', 'FID (TEM samples)', 2), ('moved', 'LPIPS moved by cleaning', 4))


def table(rows: list) -> str:
  shown = [c for c in COLUMNS if any(c[0] in row for row in rows)]
  lines = ['| round | trained on | ' + ' | '.join(c[1] for c in shown) + ' |',
           '|---|---|' + '---|' * len(shown)]
  for row in rows:
    cells = [f'{row[k]:.{d}f}' if row.get(k) is not None else '-' for k, _, d in shown]
    lines.append(f'| {row["round"]} | {row["faces"]} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def run(config, workdir) -> dict:
  """Runs the rounds; its summary: {'config', 'rounds': one row per round}."""
  stages = check_config(config, workdir)
  files = rounds.ConfigFiles(config.config_dir, config.networks)
  for field in ('train_faces', 'test_set'):  # folders taken from where the command runs
    if config[field] != 'bundled':
      config[field] = paths.absolute(config[field])
  for name in cascade.STAGES:
    config.start_from[name] = paths.absolute(config.start_from[name])
  root = pathlib.Path(paths.absolute(workdir))
  root.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  train_faces = training_faces(files, config, root, stages)
  test_dir = test_set(files, config, root, stages)
  rows, faces, moved = [], train_faces, None
  for r in range(config.rounds + 1):
    out = root / f'round_{r}'
    t0 = time.perf_counter()
    folders = train_round(files, config, stages, r, faces, root)
    row = {'round': r, 'faces': 'the given faces' if r == 0 else f'round {r - 1} cleaned',
           'faces_dir': str(faces), 'checkpoints': {k: str(v) for k, v in folders.items()},
           'steps': {k: checkpointing.find(v)[1] for k, v in folders.items()},
           **evaluate_round(files, config, folders, test_dir, train_faces, out), 'moved': moved}
    if r < config.rounds:
      manifest = clean_round(files, config, folders, faces, out / 'cleaned')
      faces, moved = out / 'cleaned' / 'images', manifest['lpips_mean']
    row['seconds_this_run'] = time.perf_counter() - t0
    rows.append(row)
    if parallel.is_main_process():  # every process holds the same row
      (out / 'table.md').write_text(table([row]) + '\n')
      (out / 'results.json').write_text(json.dumps(row, indent=1))
    print(f'round {r} in {row["seconds_this_run"]:.0f} s:\n{table([row])}', flush=True)
  if parallel.is_main_process():
    (root / 'table.md').write_text(table(rows) + '\n')
  print(table(rows))
  print(f'Total {time.perf_counter() - start:.0f} s. Held-out faces: {test_dir}; FID of TEM '
        f'samples against {train_faces}. Rounds: {root}/round_<r>/table.md')
  return job_outputs.write_summary(root, {'config': config.to_dict(), 'rounds': rows})
