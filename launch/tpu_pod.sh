#!/usr/bin/env bash
# Runs diffbfr_jax on every worker of a Cloud TPU VM (a pod slice or a single host), from a
# workstation with gcloud. On each worker it clones or updates the repository in ~/diffbfr_jax,
# makes a virtual environment there (.venv), installs requirements.txt and jax[tpu], and runs
#   python -m diffbfr_jax.main MAIN_ARGS...
# JAX finds the pod's other workers by itself (config.distributed.initialize='auto').
#
# Usage: launch/tpu_pod.sh TPU_NAME ZONE MAIN_ARGS...
# Example:
#   DIFFBFR_REPO=https://github.com/OWNER/diffbfr_jax.git \
#   launch/tpu_pod.sh my-v4-32 us-central2-b --config=configs/irm1.py \
#       --workdir=gs://BUCKET/irm1 --config.train.batch_size=256 \
#       --config.data.source.kind=folder --config.data.source.path=/mnt/ffhq
#
# Environment (read on the workstation, passed to the workers):
#   DIFFBFR_REPO    required: the git URL every worker clones (workers need read access to it)
#   DIFFBFR_BRANCH  branch to run (default: main)
#   DIFFBFR_PYTHON  interpreter that makes the venv (default: python3; current JAX needs
#                   Python >= 3.11, e.g. DIFFBFR_PYTHON=python3.11 on an Ubuntu 22.04 image;
#                   installed with apt when missing; delete ~/diffbfr_jax/.venv on the
#                   workers after changing it)
# The project is gcloud's (`gcloud config set project ...` or CLOUDSDK_CORE_PROJECT).
# --workdir must be shared by all workers (gs://...); the run stops when this ssh session ends
# (run it inside tmux or screen on the workstation for long runs).
set -euo pipefail

if (( $# < 2 )); then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
  echo "error: expected TPU_NAME ZONE MAIN_ARGS..." >&2
  exit 2
fi
tpu=$1
zone=$2
shift 2
: "${DIFFBFR_REPO:?must be the git URL of the diffbfr_jax repository that the TPU workers clone}"
branch=${DIFFBFR_BRANCH:-main}
python=${DIFFBFR_PYTHON:-python3}

main_args=''
if (( $# > 0 )); then
  main_args=$(printf ' %q' "$@")
fi

# The script every worker runs (bash). Values from here are quoted with printf %q; the rest is
# a literal (quoted here-document: nothing in it expands on the workstation).
remote="$(printf 'repo=%q branch=%q py=%q\n' "$DIFFBFR_REPO" "$branch" "$python")"
remote+=$'\n'
remote+=$(cat <<'EOF'
set -euo pipefail
dir="$HOME/diffbfr_jax"
if [[ -d "$dir/.git" ]]; then
  git -C "$dir" fetch --quiet "$repo" "$branch"
  git -C "$dir" checkout --quiet -B "$branch" FETCH_HEAD
else
  git clone --quiet --branch "$branch" "$repo" "$dir"
fi
cd "$dir"
echo "$(hostname): diffbfr_jax at $(git rev-parse --short HEAD) ($branch)"
if [[ ! -x .venv/bin/python ]]; then
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$py" "$py-venv"
  fi
  "$py" -m venv .venv
fi
. .venv/bin/activate
pip install --quiet -U pip
pip install --quiet -r requirements.txt
pip install --quiet -U "jax[tpu]"
EOF
)
remote+=$'\n'"exec python -m diffbfr_jax.main${main_args}"$'\n'

# The login shell on the workers may not be bash: hand the script to bash in single quotes.
quoted=${remote//\'/\'\\\'\'}
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "bash -c '${quoted}'"
