"""Where a job's outputs go, and the summary every job leaves there.

One rule for every job: its outputs go to the folder its config names (`output_dir`, or
`test_set.output_dir` for make_test_set), else to --workdir; a job that writes files refuses to
start without either. Every job returns one JSON-able summary and writes it to
`<that folder>/summary.json` (on process 0 only when several processes share a run).
"""

import json
import pathlib

from diffbfr_jax import errors
from diffbfr_jax import parallel
from diffbfr_jax import paths

SUMMARY = 'summary.json'


def folder(named: str, workdir, *, field: str, what: str) -> pathlib.Path:
  """The output folder: `named` (the config's `field`), or the --workdir when it is empty; a
  ConfigError naming both when neither is given."""
  if not (named or workdir):
    raise errors.ConfigError(f'config.{field} is empty and no --workdir was given: say where '
                             f'{what} go')
  return pathlib.Path(paths.absolute(named or workdir))


def workdir_folder(workdir, what: str) -> pathlib.Path:
  """The --workdir of a job whose outputs go there and nowhere else; a ConfigError without it."""
  if not workdir:
    raise errors.ConfigError(f'--workdir is required: {what} go there')
  return pathlib.Path(paths.absolute(workdir))


def write_summary(out_dir, summary: dict) -> dict:
  """Writes `summary` to OUT_DIR/summary.json (process 0; nothing when OUT_DIR is None) and
  returns it as the file holds it (tuples as lists, paths as strings)."""
  text = json.dumps(summary, indent=2, default=str)
  if out_dir is not None and parallel.is_main_process():
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).write_text(text)
  return json.loads(text)
