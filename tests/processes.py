"""Jobs run as two processes of `python -m diffbfr_jax.main`, with a coordinator on localhost and
gloo collectives, as launch/tpu_pod.sh and launch/slurm.sbatch start them on several hosts."""

import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def two_processes(*args, wrapper=None, timeout=900):
  """[(exit status, stdout, stderr)] of process 0 and 1 of main with `args` (or of the script
  `wrapper`, which runs main), and the seconds the slower one took. Their output goes to files:
  a pipe read after the other process's would fill and stop a process that logs a lot."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_CPU_COLLECTIVES_IMPLEMENTATION='gloo', JAX_PLATFORMS='cpu')
  program = ['-c', wrapper] if wrapper else ['-m', 'diffbfr_jax.main']
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as logs:
    files = [(open(f'{logs}/{i}.out', 'w+'), open(f'{logs}/{i}.err', 'w+')) for i in (0, 1)]
    procs = [subprocess.Popen(
        [sys.executable, *program, *args,
         f'--config.distributed.coordinator_address=localhost:{port}',
         '--config.distributed.num_processes=2', f'--config.distributed.process_id={i}'],
        cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        for i, (out, err) in enumerate(files)]
    results = []
    for proc, (out, err) in zip(procs, files):
      proc.wait(timeout=timeout)
      out.seek(0)
      err.seek(0)
      results.append((proc.returncode, out.read(), err.read()))
      out.close()
      err.close()
  return results, time.perf_counter() - start


def ok(results):
  for i, (code, _, err) in enumerate(results):
    assert code == 0, f'process {i}: exit status {code}\n{err[-4000:]}'


def flags(fields: dict, prefix: str = 'config') -> list:
  """`--config.FIELD=VALUE` for every leaf of `fields` (nested dicts: the fields a test sets)."""
  out = []
  for key, value in fields.items():
    if isinstance(value, dict):
      out += flags(value, f'{prefix}.{key}')
    else:
      out.append(f'--{prefix}.{key}={value}')
  return out


def set_fields(config, fields: dict):
  """`config` with `fields` (as `flags` takes them) set in place, paths as strings."""
  for key, value in fields.items():
    if isinstance(value, dict):
      set_fields(config[key], value)
    else:
      config[key] = str(value) if isinstance(value, pathlib.Path) else value
  return config
