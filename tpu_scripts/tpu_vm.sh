#!/usr/bin/env bash
# Run jaxrec on a Cloud TPU VM or pod slice: create, install, run on all workers, stream logs, copy, delete.
#
#   tpu_scripts/tpu_vm.sh STEP [options] [-- jaxrec args...]
#
# STEP: create | install | run | logs | copy | delete | all (create, install, run, copy, delete) |
#       spot (all, with --spot, re-created and re-run after every preemption until the run finishes)
# Options (or environment variables of the same name in capitals):
#   --name NAME            TPU VM name                          (TPU_NAME, default jaxrec-tpu)
#   --zone ZONE            e.g. us-east5-a                       (TPU_ZONE, required)
#   --project PROJECT      GCP project                           (TPU_PROJECT, default: gcloud's)
#   --accelerator TYPE     v5p-8, v4-32, v5litepod-16, ...       (TPU_ACCELERATOR, default v5p-8)
#   --version VERSION      TPU runtime image                     (TPU_VERSION, default: the one of the
#                          accelerator family: v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
#                          v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
#   --python PYTHON        interpreter for the workers' venv, >= 3.11 (TPU_PYTHON, default python3.11,
#                          installed with apt when missing: the images ship 3.10)
#   --repo URL_OR_PATH     jaxrec source: a git URL or a local dir copied with scp (default: this checkout)
#   --results REMOTE_DIR   directory the run writes, copied back by `copy` (default runs)
#   --dest LOCAL_DIR       where `copy` puts it (default ./tpu-results/NAME)
#   --spot                 request spot capacity
#   --attempts N           spot: give up after N preemptions (TPU_ATTEMPTS, default 20)
#   --compile-cache DIR    persistent XLA compilation cache the run uses, e.g. gs://BUCKET/xla-cache so that a
#                          re-created VM does not recompile (TPU_COMPILE_CACHE, default ~/.cache/jaxrec/xla)
#   --dry-run              print every command instead of running it
# Everything after `--` is passed to `jaxrec` on every worker, e.g.
#   tpu_scripts/tpu_vm.sh all --zone us-east5-a --accelerator v5p-8 -- train --config configs/scale/llama3_8b_lora_v5p8.yaml
# Data, run directories and checkpoints may be gs:// paths (see README "Scale out"). `spot` needs them in a bucket:
# a preempted VM loses its disk, and the re-run resumes from the bucket's last checkpoint. The run's exit status
# decides: 0 finished (copy, delete), 143 or a lost connection preempted (delete, create, run again), else stop.
set -euo pipefail

STEP="${1:-}"; [[ -n "$STEP" ]] && shift || true
NAME="${TPU_NAME:-jaxrec-tpu}"; ZONE="${TPU_ZONE:-}"; PROJECT="${TPU_PROJECT:-}"
ACCEL="${TPU_ACCELERATOR:-v5p-8}"; VERSION="${TPU_VERSION:-}"; PYTHON="${TPU_PYTHON:-python3.11}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"; RESULTS="runs"; DEST=""; SPOT=0; DRY=0; JAXREC_ARGS=()
ATTEMPTS="${TPU_ATTEMPTS:-20}"; COMPILE_CACHE="${TPU_COMPILE_CACHE:-}"

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "tpu_vm.sh: error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --accelerator) ACCEL="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --repo) REPO="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --attempts) ATTEMPTS="$2"; shift 2 ;;
    --compile-cache) COMPILE_CACHE="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; JAXREC_ARGS=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
case "$STEP" in create|install|run|logs|copy|delete|all|spot) ;; ""|-h|--help) usage; exit 0 ;; *) die "unknown step '$STEP'; expected create|install|run|logs|copy|delete|all|spot" ;; esac
[[ "$ATTEMPTS" =~ ^[1-9][0-9]*$ ]] || die "--attempts must be a positive integer, got '$ATTEMPTS'"
[[ -n "$ZONE" ]] || die "--zone (or TPU_ZONE) is required"
DEST="${DEST:-./tpu-results/$NAME}"
runtime_of() {  # the TPU software version matching an accelerator type's family
  case "$1" in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime image for accelerator '$1'; pass --version" ;;
  esac
}
VERSION="${VERSION:-$(runtime_of "$ACCEL")}"
VENV="~/jaxrec-venv"

GCLOUD=(gcloud compute tpus tpu-vm)
LOC=(--zone "$ZONE"); [[ -n "$PROJECT" ]] && LOC+=(--project "$PROJECT")

run() {  # print the command (shell-quoted); execute it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  [[ "$DRY" == 1 ]] || "$@"
}
on_all_workers() { run "${GCLOUD[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "$1"; }

do_create() {
  local extra=(); [[ "$SPOT" == 1 ]] && extra+=(--spot)
  run "${GCLOUD[@]}" create "$NAME" "${LOC[@]}" --accelerator-type "$ACCEL" --version "$VERSION" "${extra[@]}"
}
do_install() {
  if [[ "$REPO" == *://* || "$REPO" == git@* ]]; then
    on_all_workers "rm -rf ~/jaxrec && git clone --depth 1 $REPO ~/jaxrec"
  else
    run "${GCLOUD[@]}" scp --recurse "$REPO" "$NAME:~/jaxrec" "${LOC[@]}" --worker=all
  fi
  # a Python >= 3.11 virtual environment on every worker (the images ship 3.10), with jaxrec[tpu]
  on_all_workers "command -v $PYTHON >/dev/null || (sudo apt-get update -q && sudo apt-get install -yq $PYTHON $PYTHON-venv) && $PYTHON -m venv $VENV && cd ~/jaxrec && $VENV/bin/pip install -q -U pip && $VENV/bin/pip install -e '.[tpu]'"
}
do_run() {
  [[ ${#JAXREC_ARGS[@]} -gt 0 ]] || die "run needs jaxrec arguments after --, e.g. -- train --config CONFIG"
  local args; args="$(printf ' %q' "${JAXREC_ARGS[@]}")"
  local cache=""; [[ -n "$COMPILE_CACHE" ]] && cache="JAXREC_COMPILATION_CACHE=$(printf %q "$COMPILE_CACHE") "
  # every worker runs the same command; jax.distributed.initialize() discovers the slice on TPU VMs. The ssh
  # command ends with jaxrec's exit status (143: stopped by SIGTERM, i.e. preempted)
  on_all_workers "cd ~/jaxrec && ${cache}JAXREC_DISTRIBUTED=auto nohup $VENV/bin/jaxrec${args} > ~/jaxrec-run.log 2>&1; rc=\$?; echo exit=\$rc >> ~/jaxrec-run.log; exit \$rc"
}
do_spot() {
  SPOT=1
  local attempt rc
  for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
    rc=0
    if ! do_create; then
      rc=create  # no spot capacity now
    else
      { do_install && do_run; } || rc=$?
      if [[ "$rc" == 0 ]]; then
        do_copy; do_delete; return 0
      fi
      # 143: jaxrec stopped by SIGTERM (the preemption notice); 255: ssh lost the VM
      case "$rc" in 143|255) ;; *) die "the run failed (exit $rc); see ~/jaxrec-run.log on worker 0 (tpu_vm.sh logs); the VM is kept" ;; esac
    fi
    echo "tpu_vm.sh: attempt $attempt of $ATTEMPTS ended ($rc: preempted or no capacity); re-creating $NAME" >&2
    do_delete || true
    sleep "${TPU_RETRY_WAIT:-60}"
  done
  die "gave up after $ATTEMPTS attempts"
}
do_logs() { run "${GCLOUD[@]}" ssh "$NAME" "${LOC[@]}" --worker=0 --command "tail -n +1 -f ~/jaxrec-run.log"; }
do_copy() {
  run mkdir -p "$DEST"
  run "${GCLOUD[@]}" scp --recurse "$NAME:~/jaxrec/$RESULTS" "$DEST" "${LOC[@]}" --worker=0
  run "${GCLOUD[@]}" scp "$NAME:~/jaxrec-run.log" "$DEST/" "${LOC[@]}" --worker=0
}
do_delete() { run "${GCLOUD[@]}" delete "$NAME" "${LOC[@]}" --quiet; }

case "$STEP" in
  create) do_create ;;
  install) do_install ;;
  run) do_run ;;
  logs) do_logs ;;
  copy) do_copy ;;
  delete) do_delete ;;
  all) do_create; do_install; do_run; do_copy; do_delete ;;
  spot) do_spot ;;
esac
