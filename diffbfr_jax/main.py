r"""Entry point: `python -m diffbfr_jax.main --config=configs/<name>.py[:preset] --workdir=DIR`.

The config's `job` field picks what runs: the module of that name in diffbfr_jax/jobs/, whose
`run(config, workdir)` returns the job's summary (also written to its output folder). A mistake the user can make (errors.UserError) is printed as one
`error: ...` line; anything else is a bug and keeps its traceback.

The terminal shows each job's progress lines, warnings, errors and its result; the full log
(absl INFO: compiles, checkpoints, Orbax, parameter tables) goes to WORKDIR/log.txt
(log_process_<i>.txt on several processes), and to the terminal as well with --verbose. A job
run without a workdir or output folder logs to the terminal as before.
"""

import importlib
import logging
import os
import pathlib
import pkgutil
import re
import sys
import traceback

# TensorFlow's C++ start-up messages (its CUDA probe's "failed call to cuInit" on a machine
# without a GPU) stay off the terminal unless asked for (--verbose, or the variable set).
if '--verbose' not in sys.argv:
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

from diffbfr_jax import errors  # pylint: disable=g-import-not-at-top,wrong-import-position
from diffbfr_jax import jobs  # pylint: disable=g-import-not-at-top,wrong-import-position
from diffbfr_jax import parallel  # pylint: disable=g-import-not-at-top,wrong-import-position
from diffbfr_jax import paths  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics of the run.')
flags.DEFINE_bool('verbose', False, 'Print the full log (INFO) on the terminal too; it always '
                  'goes to WORKDIR/log.txt.')
config_flags.DEFINE_config_file(
    'config', None, 'A stage config file, e.g. configs/tem.py or configs/irm1.py:demo.',
    lock_config=True)


def job_names() -> list:
  """Every job's name: the modules of diffbfr_jax/jobs/ (the folder is the job table)."""
  return sorted(m.name for m in pkgutil.iter_modules(jobs.__path__) if not m.name.startswith('_'))


def run(config, workdir) -> dict:
  """Runs `config.job` (`diffbfr_jax.jobs.<job>.run`) and returns its summary; separate from
  `main` so tests can call it without flags. Starts multi-host JAX and the compilation cache
  first (`start`; nothing when `main` did already). Relative paths in `workdir` and in the
  config's path fields are taken from the current folder. Each job checks its own config.

  On several processes (a TPU pod, a SLURM job) a job's module says how it runs, by its
  `PROCESSES`: 'all' (the default: every process takes part; training shards every batch,
  restore, sample and clean share the files out), 'main' (process 0 runs it while the others
  wait: work done once, whose outputs the others may read) or 'one' (a one-process experiment,
  refused on several processes)."""
  job = config.get('job')
  if job not in job_names():
    raise errors.ConfigError(f'config.job={job!r}: expected one of {job_names()}')
  config = config.copy_and_resolve_references()
  paths.make_absolute(config)
  start(config)
  workdir = paths.absolute(workdir or '')
  module = importlib.import_module(f'{jobs.__name__}.{job}')
  processes = getattr(module, 'PROCESSES', 'all')
  if processes == 'one' and parallel.is_multihost():
    raise errors.ConfigError(
        f'config.job={job!r} runs in one process, and this run has '
        f'{parallel.process_count()}: run it on one host with '
        '--config.distributed.initialize=never')
  if processes == 'main':
    return parallel.on_main_process(f'{job}: done', module.run, config, workdir)
  return module.run(config, workdir)


def start(config) -> None:
  """What every job needs before anything asks for a device: multi-host JAX
  (`config.distributed`, once per process) and JAX's persistent compilation cache
  (`config.compilation_cache_dir`; '' leaves JAX's own setting)."""
  parallel.initialize(**config.distributed)
  if config.compilation_cache_dir:
    parallel.use_compilation_cache(paths.absolute(config.compilation_cache_dir))


def log_file(config, workdir):
  """The run's log file: in the workdir, else in the job's output folder; None without either."""
  folder = workdir or config.get('output_dir', '')
  if not folder:
    return None
  name = ('log.txt' if parallel.process_count() == 1 else
          f'log_process_{parallel.process_index()}.txt')
  return pathlib.Path(paths.absolute(folder)) / name


def log_to_file(path, verbose: bool) -> None:
  """Appends the full log (INFO and up) to `path`; the terminal keeps warnings and errors only,
  unless `verbose`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  handler = logging.FileHandler(path)
  handler.setFormatter(absl_logging.PythonFormatter())
  handler.setLevel(logging.INFO)
  logging.getLogger().addHandler(handler)
  if not verbose:
    absl_logging.get_absl_handler().setLevel(logging.WARNING)
  logging.info('Log of: %s', ' '.join(sys.argv))


def parse_flags(argv):
  """absl's flag parsing, with one `error: ...` line naming the flag and its value (not a
  traceback) for a config file that does not exist or fails to load, an unknown preset or
  field, or a value of the wrong type."""
  for arg in argv[1:]:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1].split(':', 1)[0]
      if not os.path.isfile(path):
        sys.exit(f'error: {arg}: the config file {path!r} does not exist (the stage configs are '
                 'configs/irm1.py, configs/irm2.py and configs/tem.py)')
  try:
    return FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except (every failure becomes one line)
    sys.exit(f'error: {_flag_error(e, argv)}')


def _flag_error(e: BaseException, argv) -> str:
  """`--name=value: why` for an exception raised while parsing the flags `argv`."""
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  why = re.sub(r'^[\w.]+(Error|Exception): ', '', lines[-1]) if lines else type(e).__name__
  if isinstance(e, (AttributeError, KeyError)):
    # An override of a field the config does not have (ml_collections applies the overrides
    # while it loads the config file, so the failing one is found by the missing name).
    missing = why.strip('"\'')
    for arg in argv[1:]:
      name = arg.split('=', 1)[0]
      if name.startswith('--config.') and missing in name.split('.')[1:]:
        return (f"{arg}: the config has no field {name.removeprefix('--config.')!r} (see the "
                'config file for its fields)')
    return f'the config has no field {missing!r} (see the config file for its fields)'
  if isinstance(e, flags.Error) and len(lines) == 1:
    return why.removeprefix('flag ')  # absl's own: 'flag --name=value: why'
  flag = lines[0].removeprefix('flag ').split(': ', 1)[0] if lines[0].startswith('flag --') else ''
  return f'{flag}: {why}' if flag else why


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.config is None:
    raise app.UsageError('Pass --config=configs/<stage>.py[:preset], e.g. configs/irm1.py:demo.')
  config = FLAGS.config
  try:
    quiet = not FLAGS.verbose and bool(FLAGS.workdir or config.get('output_dir', ''))
    if quiet:  # from the start: the log file opens once the process index is known
      absl_logging.get_absl_handler().setLevel(logging.WARNING)
    start(config)  # before anything asks for a device
    path = log_file(config, FLAGS.workdir)
    if path:
      log_to_file(path, FLAGS.verbose)
      if parallel.is_main_process() and quiet:
        print(f'{config.job}: full log in {path} (--verbose prints it here too)', flush=True)
    logging.info('%s; compilation cache %s', parallel.describe(),
                 config.compilation_cache_dir or '(JAX default)')
    run(config, FLAGS.workdir)
    # A run ends together: a process whose share failed stops the others here, not later.
    parallel.barrier(f'{config.job}: finished')
  except errors.OtherProcessFailed as e:
    parallel.stop_after_other_failure(e)
  except errors.Stopped as e:
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
  except errors.UserError as e:
    parallel.fail(f'error: {e}')
  except SystemExit:
    raise
  except BaseException as e:  # a bug (its traceback first) or an interrupt
    if not parallel.is_multihost():
      raise
    parallel.fail(f'{type(e).__name__}: {e}', details=traceback.format_exc())


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
