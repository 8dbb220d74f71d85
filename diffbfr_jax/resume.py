"""The one rule of every job that goes on from its own earlier outputs: an output is reused only
when it was made from the same settings; otherwise it is made again (scores, samples, test sets)
or the job stops with the fields that differ (trained models, which are never thrown away).

An output folder that can be reused holds `made_from.json`: the settings that determine it (the
checkpoints and their steps, the chain, the metrics, the seed, ...), written when it is
complete. `differences` is also the comparison of a checkpoint's meta with a config
(`checkpointing.meta_differences`).
"""

import json
import logging
import pathlib

from diffbfr_jax import errors

FILE = 'made_from.json'
ABSENT = '(absent)'


def normal(tree):
  """`tree` as JSON reads it back: tuples are lists, paths and other objects their strings."""
  return json.loads(json.dumps(tree, default=str))


def flat(tree, prefix: str = '') -> dict:
  """{'a.b.c': leaf} of nested dicts."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(flat(v, f'{prefix}{k}.'))
    return out
  return {prefix[:-1]: tree}


def differences(stored, wanted, ignore=()) -> list:
  """[(field, stored value, wanted value)] of every leaf in which two nested dicts differ (JSON's
  lists and tuples alike; ABSENT for a missing one), sorted by field; `ignore`: fields skipped."""
  a, b = flat(normal(stored)), flat(normal(wanted))
  return [(f, a.get(f, ABSENT), b.get(f, ABSENT)) for f in sorted(a.keys() | b.keys())
          if a.get(f, ABSENT) != b.get(f, ABSENT) and f not in ignore]


def listed(diffs, limit: int = 6) -> str:
  shown = '; '.join(f'{f}: {a} before, {b} now' for f, a, b in diffs[:limit])
  return shown + (f'; and {len(diffs) - limit} more' if len(diffs) > limit else '')


def stored(folder):
  """The settings recorded in `folder`, or None (no record, or an unreadable one)."""
  path = pathlib.Path(folder) / FILE
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def reusable(folder, settings: dict, what: str) -> bool:
  """True when `folder` holds a complete output made from `settings`. When it holds one made
  from other settings, logs the fields that differ (the caller makes it again)."""
  before = stored(folder)
  if before is None:
    return False
  diffs = differences(before, settings)
  if diffs:
    print(f'{what} in {folder} was made with other settings ({listed(diffs)}): making it again',
          flush=True)
    return False
  return True


def record(folder, settings: dict) -> None:
  """Marks `folder` complete and made from `settings` (written last, atomically)."""
  path = pathlib.Path(folder) / FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix('.json.tmp')
  tmp.write_text(json.dumps(normal(settings), indent=1, sort_keys=True))
  tmp.replace(path)


def check_unchanged(folder, settings: dict, what: str, remedy: str) -> None:
  """Stops with a ConfigError naming every field that differs when `folder` holds a `what`
  (trained models: kept, never remade) made from other settings; records `settings` in a
  folder that has no record yet."""
  before = stored(folder)
  if before is None:
    record(folder, settings)
    return
  diffs = differences(before, settings)
  if diffs:
    raise errors.ConfigError(f'{folder} holds {what} made with other settings ({listed(diffs)}). '
                             f'{remedy}')
  logging.info('%s in %s: same settings, going on', what, folder)
