#!/usr/bin/env bash
# Runs diffbfr_jax on one machine with NVIDIA GPUs: one process that uses all of its GPUs.
# Run it from the repository root; every argument goes to `python -m diffbfr_jax.main`.
#
# Usage: launch/gpu.sh MAIN_ARGS...
# Example:
#   launch/gpu.sh --config=configs/tem.py --workdir=runs/tem --config.train.batch_size=32 \
#       --config.data.source.kind=folder --config.data.source.path=/data/ffhq512
#
# Environment:
#   DIFFBFR_SETUP=1   first make the virtual environment $DIFFBFR_VENV if missing and install
#                     requirements.txt and jax[cuda12] into it (default 0: install nothing)
#   DIFFBFR_VENV      virtual environment, activated when it exists (default: .venv, the one
#                     `make demo` and `make test` make); otherwise the `python` on PATH runs
#   DIFFBFR_PYTHON    interpreter that makes the venv (default: python3)
#   XLA_PYTHON_CLIENT_MEM_FRACTION  share of each GPU's memory JAX takes (default here: .95)
#   CUDA_VISIBLE_DEVICES            restricts the GPUs, as usual
set -euo pipefail

if [[ ! -f diffbfr_jax/main.py ]]; then
  echo "error: run launch/gpu.sh from the root of the diffbfr_jax repository (now in $PWD)" >&2
  exit 2
fi

venv=${DIFFBFR_VENV:-.venv}
if [[ "${DIFFBFR_SETUP:-0}" == 1 ]]; then
  if [[ ! -x "$venv/bin/python" ]]; then
    "${DIFFBFR_PYTHON:-python3}" -m venv "$venv"
  fi
  # shellcheck source=/dev/null  # the venv exists only at run time
  . "$venv/bin/activate"
  pip install -U pip
  pip install -r requirements.txt
  pip install -U "jax[cuda12]"
elif [[ -f "$venv/bin/activate" ]]; then
  # shellcheck source=/dev/null  # the venv exists only at run time
  . "$venv/bin/activate"
elif [[ -n "${DIFFBFR_VENV:-}" ]]; then
  echo "error: DIFFBFR_VENV=$DIFFBFR_VENV holds no virtual environment (DIFFBFR_SETUP=1 makes it)" >&2
  exit 2
fi

export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-.95}
exec python -m diffbfr_jax.main "$@"
