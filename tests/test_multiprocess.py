"""Every job that writes files, run as two processes of `python -m diffbfr_jax.main` with a
coordinator on localhost and gloo collectives, as launch/tpu_pod.sh and launch/slurm.sbatch start
them on several hosts (tests/processes.py), compared with the same job in one process. The sample
and iterate jobs are compared in tests/test_sample.py and tests/test_clean.py, beside their
one-process runs."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from configs import cascade as cascade_config
from configs import clean as clean_config
from configs import common
from configs import evaluate as evaluate_config
from configs import irm2
from configs import tem
from diffbfr_jax import cascade
from diffbfr_jax import main
from diffbfr_jax.data import sources
from tests import processes


def _read(path):
  return np.asarray(Image.open(path)).astype(int)


def _pngs(folder):
  return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*.png'))


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
  """Six of the held-out bundled faces at 32x32."""
  every = sources.write_bundled_faces('test', 32, tmp_path_factory.mktemp('bundled'))
  root = tmp_path_factory.mktemp('faces')
  for path in sorted(every.iterdir())[:6]:
    path.rename(root / path.name)
  return root


def _stage_params(workdir, step, stage='irm2', params='params'):
  """{name: array} of a stage's parameters in a checkpoint, as the sampling jobs read them."""
  module = {'irm2': irm2, 'tem': tem}[stage]
  config = common.sampling_stage(module.get_config('smoke'), str(workdir))
  config.update(step=step, params=params)
  return _flat(cascade.stage_from_checkpoint(stage, config)[1])


def test_train_and_its_resume_on_two_processes_equal_one_process(tmp_path):
  fields = {'train': {'batch_size': 4, 'num_steps': 2, 'checkpoint_every': 2}}
  args = ['--config=configs/irm2.py:smoke', f'--workdir={tmp_path / "two"}']
  results, _ = processes.two_processes(*args, *processes.flags(fields))
  processes.ok(results)
  events = lambda: sorted((tmp_path / 'two').glob('events.out.tfevents.*'))
  assert len(events()) == 1  # metrics written by process 0 only
  fields['train']['num_steps'] = 4  # the same command with more steps resumes
  results, _ = processes.two_processes(*args, *processes.flags(fields))
  processes.ok(results)
  for i, (_, out, err) in enumerate(results):  # the full log goes to each process's file
    assert 'Resumed from the checkpoint of step 2' in (
        tmp_path / 'two' / f'log_process_{i}.txt').read_text()
    assert 'Resumed from the checkpoint' not in err  # not on the terminal
  assert 'irm2 step 4/4: loss' in results[0][1] and 'irm2 step' not in results[1][1]
  assert len(events()) == 2
  assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir()) == ['2', '4']

  config = irm2.get_config('smoke')  # one process, one device, the whole batch of 4
  config.train.update(batch_size=4, num_steps=4, checkpoint_every=2)
  main.run(config, str(tmp_path / 'one'))
  one, two = _stage_params(tmp_path / 'one', 4), _stage_params(tmp_path / 'two', 4)
  assert one.keys() == two.keys() and len(one) > 10
  for name in one:
    # Two devices' mean gradient against one device's: float summation order, well under a step.
    np.testing.assert_allclose(one[name], two[name], rtol=0, atol=1e-5, err_msg=name)


def _flat(tree):
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _restore_fields(smoke_runs, faces):
  return {'input_dir': faces, 'batch_size': 2, 'irm1': {'checkpoint': smoke_runs['irm1']},
          'irm2': {'checkpoint': smoke_runs['irm2']}, 'tem': {'checkpoint': smoke_runs['tem']}}


def test_restore_on_two_processes_equals_one_process(smoke_runs, faces, tmp_path):
  fields = _restore_fields(smoke_runs, faces)
  main.run(processes.set_fields(cascade_config.get_config('fast,smoke'), fields), str(tmp_path / 'one'))
  results, _ = processes.two_processes('--config=configs/cascade.py:fast,smoke',
                              f'--workdir={tmp_path / "two"}', *processes.flags(fields))
  processes.ok(results)
  # Each process restored its share (every second file) and said so.
  assert [out.count('Restored 3 images of 3 files') for _, out, _ in results] == [1, 1]
  names = _pngs(tmp_path / 'one')
  assert names == _pngs(tmp_path / 'two') and len(names) == 6
  for name in names:
    # A face's result depends on its name and the seed only, not on its batch or process.
    assert np.abs(_read(tmp_path / 'one' / name) - _read(tmp_path / 'two' / name)).max() <= 1


def test_a_failure_on_one_process_stops_the_other(smoke_runs, faces, tmp_path):
  out = tmp_path / 'restored'
  out.mkdir()
  (out / 'lfw_080.png').write_bytes(b'')  # in process 1's share (every second name from 1)
  results, seconds = processes.two_processes('--config=configs/cascade.py:fast,smoke',
                                    f'--workdir={out}',
                                    *processes.flags(_restore_fields(smoke_runs, faces)))
  assert [code for code, _, _ in results] == [1, 1]
  last = [err.strip().splitlines()[-1] for _, _, err in results]
  assert last[1].startswith('error: 1 outputs already exist (first: ') and 'lfw_080' in last[1]
  assert last[0] == f'error: process 1 of 2 failed: {last[1]} (this process stopped at ' \
                    "'restore: outputs checked')"
  assert seconds < 60
  assert _pngs(out) == ['lfw_080.png']  # nothing restored, nothing overwritten


# Process 1 fails at its third batch of training, while process 0 waits for it in the collective
# of the train step (there is no barrier to stop at).
_FAILING_TRAIN = '''
import sys
from absl import app
import jax
from diffbfr_jax import main, train

make_builder = train.example_builder

def example_builder(config):
  build, batches = make_builder(config), []
  def failing(batch):
    batches.append(1)
    if jax.process_index() == 1 and len(batches) == 3:
      raise RuntimeError('a failure of process 1')
    return build(batch)
  return failing

train.example_builder = example_builder
sys.argv[0] = 'diffbfr_jax.main'
app.run(main.main, flags_parser=main.parse_flags)
'''


def test_a_failure_inside_a_train_step_stops_the_other_process(tmp_path):
  results, seconds = processes.two_processes(
      '--config=configs/irm2.py:smoke', f'--workdir={tmp_path / "run"}',
      '--config.train.batch_size=4', '--config.train.num_steps=6', wrapper=_FAILING_TRAIN)
  assert [code for code, _, _ in results] == [1, 1]
  assert 'RuntimeError: a failure of process 1' in results[1][2]
  assert results[1][2].strip().splitlines()[-1] == 'RuntimeError: a failure of process 1'
  last = results[0][2].strip().splitlines()[-1]
  assert last.startswith('error: process 1 of 2 failed: RuntimeError: a failure of process 1 ')
  # Well before JAX's own timeouts (a 100 s heartbeat, a 300 s shutdown barrier) would end it.
  assert seconds < 240


# Process 1 fails while process 0 waits where no barrier comes: a long computation, or a
# collective of an accelerator that waits for the failed process without an error.
_FAILING_WHILE_THE_OTHER_WAITS = '''
import sys
import time
from absl import app
import jax
from diffbfr_jax import main

def run(config, workdir):
  if jax.process_index() == 1:
    raise RuntimeError('a failure of process 1')
  time.sleep(600)

main.run = run
sys.argv[0] = 'diffbfr_jax.main'
app.run(main.main, flags_parser=main.parse_flags)
'''


def test_a_process_that_waits_where_no_barrier_comes_is_stopped_too(tmp_path):
  results, seconds = processes.two_processes(
      '--config=configs/tem.py:smoke', '--config.job=summary',
      wrapper=_FAILING_WHILE_THE_OTHER_WAITS)
  assert [code for code, _, _ in results] == [1, 1]
  assert results[0][2].strip().splitlines()[-1] == (
      'error: process 1 of 2 failed: RuntimeError: a failure of process 1 (this process was '
      'stopped while it waited for it)')
  assert seconds < 120  # the watch thread's 1 s polls and 10 s grace, and the start-up


def _clean_fields(smoke_run, faces):
  return {'input_dir': faces, 'batch_size': 2, 'grid_count': 4,
          'tem': {'checkpoint': smoke_run('tem'), 'sampling': {'respacing': '250'}}}


def test_clean_on_two_processes_writes_one_processs_manifest(smoke_run, faces, tmp_path):
  fields = _clean_fields(smoke_run, faces)
  main.run(processes.set_fields(clean_config.get_config('tem,smoke'), fields), str(tmp_path / 'one'))
  one = json.loads((tmp_path / 'one' / 'manifest.json').read_text())
  results, _ = processes.two_processes('--config=configs/clean.py:tem,smoke',
                              f'--workdir={tmp_path / "two"}', *processes.flags(fields))
  processes.ok(results)
  assert sorted(p.name for p in (tmp_path / 'two' / 'records').iterdir()) == [
      'process_00000.jsonl', 'process_00001.jsonl']
  two = json.loads((tmp_path / 'two' / 'manifest.json').read_text())
  drop = lambda manifest: {k: v for k, v in manifest.items() if k not in ('images', 'lpips_mean')}
  assert drop(two) == drop(one) and two['counts']['cleaned'] == 6
  assert [r['name'] for r in two['images']] == [r['name'] for r in one['images']]
  for a, b in zip(one['images'], two['images']):
    without = lambda record: {k: v for k, v in record.items() if k != 'lpips'}
    assert without(a) == without(b) and a['lpips'] == pytest.approx(b['lpips'], abs=1e-3)
  assert _pngs(tmp_path / 'two') == _pngs(tmp_path / 'one')
  for name in _pngs(tmp_path / 'one'):
    assert np.abs(_read(tmp_path / 'one' / name) - _read(tmp_path / 'two' / name)).max() <= 1


def test_evaluate_on_two_processes_writes_one_processs_summary(faces, tmp_path):
  restored = tmp_path / 'restored'
  restored.mkdir()
  rng = np.random.default_rng(0)
  for path in sorted(faces.glob('*.png')):
    noisy = np.asarray(Image.open(path)).astype(int) + rng.integers(-20, 21, (32, 32, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(restored / path.name)
  fields = {'restored_dir': restored, 'gt_dir': faces, 'metrics': "('psnr','ssim')"}
  config = evaluate_config.get_config()
  config.update(restored_dir=str(restored), gt_dir=str(faces), metrics=('psnr', 'ssim'))
  one = main.run(config, str(tmp_path / 'one'))
  results, _ = processes.two_processes('--config=configs/evaluate.py', f'--workdir={tmp_path / "two"}',
                              *processes.flags(fields))
  processes.ok(results)
  assert ['| SSIM' in out for _, out, _ in results] == [True, False]  # one Table 1 row
  assert json.loads((tmp_path / 'two' / 'summary.json').read_text()) == one
  assert (tmp_path / 'two' / 'per_image.csv').read_text() == \
      (tmp_path / 'one' / 'per_image.csv').read_text()


def test_convert_on_two_processes_writes_one_processs_checkpoint(tmp_path):
  pytest.importorskip('torch')
  from tests.convert import test_job  # pylint: disable=g-import-not-at-top
  from tests.convert import torch_unets  # pylint: disable=g-import-not-at-top

  config = tem.get_config('smoke')
  test_job._save_as_published(torch_unets.random_net(config), config, tmp_path / 'tem.pth')  # pylint: disable=protected-access
  config.update(job='convert')
  config.convert.source = str(tmp_path / 'tem.pth')
  main.run(config, str(tmp_path / 'one'))
  results, _ = processes.two_processes(
      '--config=configs/tem.py:smoke', '--config.job=convert',
      f'--config.convert.source={tmp_path / "tem.pth"}', f'--workdir={tmp_path / "two"}')
  processes.ok(results)
  for item in ('params', 'ema_params'):
    one = _stage_params(tmp_path / 'one', 0, 'tem', item)
    two = _stage_params(tmp_path / 'two', 0, 'tem', item)
    assert one.keys() == two.keys() and len(one) > 10
    for name in one:
      np.testing.assert_array_equal(one[name], two[name], err_msg=name)
