#!/usr/bin/env bash
# Launch jaxrec on a multi-node GPU cluster with SLURM: one process per node, all GPUs of a node each.
#
#   tpu_scripts/gpu_slurm.sh [options] -- jaxrec args...
#
# Options:
#   --nodes N            number of nodes (default 1)
#   --gpus-per-node G    GPUs per node (default 8)
#   --partition P        SLURM partition (optional)
#   --time HH:MM:SS      time limit (default 24:00:00)
#   --port PORT          coordinator port on the first node (default 12355)
#   --dry-run            print the sbatch script and the command instead of submitting
# Inside the job, every process runs `jaxrec ...` with JAXREC_COORDINATOR / JAXREC_NUM_PROCESSES /
# JAXREC_PROCESS_ID set from SLURM, which jaxrec.parallel.distributed passes to jax.distributed.initialize.
set -euo pipefail

NODES=1; GPUS=8; PARTITION=""; TIME="24:00:00"; PORT=12355; DRY=0; JAXREC_ARGS=()
die() { echo "gpu_slurm.sh: error: $*" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --gpus-per-node) GPUS="$2"; shift 2 ;;
    --partition) PARTITION="$2"; shift 2 ;;
    --time) TIME="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; JAXREC_ARGS=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ ${#JAXREC_ARGS[@]} -gt 0 ]] || die "give jaxrec arguments after --, e.g. -- train --config CONFIG"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$NODES'"

ARGS="$(printf ' %q' "${JAXREC_ARGS[@]}")"
SCRIPT="#!/usr/bin/env bash
#SBATCH --job-name=jaxrec
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --time=$TIME
${PARTITION:+#SBATCH --partition=$PARTITION}
set -euo pipefail
HEAD=\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n 1)
srun bash -c 'JAXREC_COORDINATOR='\"\$HEAD\"':$PORT JAXREC_NUM_PROCESSES=\$SLURM_NTASKS JAXREC_PROCESS_ID=\$SLURM_PROCID jaxrec$ARGS'
"
if [[ "$DRY" == 1 ]]; then
  printf '%s\n' "$SCRIPT"
  echo "+ sbatch <script above>"
else
  printf '%s\n' "$SCRIPT" | sbatch
fi
