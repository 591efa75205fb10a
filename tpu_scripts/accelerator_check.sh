#!/usr/bin/env bash
# One accelerator check: on a machine with a GPU or TPU, in about 8 minutes, measure what CPU hosts cannot and
# write OUT/accelerator_check.json plus OUT/accelerator_check.md (a table for BENCHMARKS.md).
#
#   tpu_scripts/accelerator_check.sh [--out DIR] [--smoke]
#
# Steps (each with its own time limit; a failed step is recorded and the others still run):
#   parity     the HF-parity tests (Llama, T5 logits; beam search vs HF generate) on the device
#   train      jaxrec bench train --preset accelerator-1b: LoRA on a 1.1B Llama, tokens/s and MFU
#   decode     jaxrec bench decode --preset accelerator: constrained beam search, users/s
#   ground     jaxrec bench ground over 1M items: queries/s and matmul_peak_fraction
#   attention  jaxrec bench attention: step time of each model.attention kernel (xla, cudnn, splash)
# --smoke runs every step with tiny shapes on the CPU (what CI runs to keep this script working).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="accelerator-check"; SMOKE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "accelerator_check.sh: error: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
JAXREC=(python -m jaxrec.cli)

# the benchmarks measure ONE device (the ≥1B LoRA shape fits one): other GPUs / TPU chips are hidden from them
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" TPU_VISIBLE_CHIPS="${TPU_VISIBLE_CHIPS:-0}"
export TPU_CHIPS_PER_PROCESS_BOUNDS="${TPU_CHIPS_PER_PROCESS_BOUNDS:-1,1,1}" TPU_PROCESS_BOUNDS="${TPU_PROCESS_BOUNDS:-1,1,1}"
if [[ "$SMOKE" == 1 ]]; then
  export JAX_PLATFORMS=cpu XLA_FLAGS=""  # one CPU device
  PARITY=(-k "logits_match_hf_with_and_without_padding")
  TRAIN=(bench train --preset tiny --steps 2 --warmup 1 --peer none)
  DECODE=(bench decode --preset tiny --peer none --repeats 1)
  GROUND=(bench ground --queries 64 --items 20000 --dim 32 --peer none)
  ATTENTION=(bench attention --batch 2 --seq 128 --heads 4 --kv-heads 2 --dim 32 --dtype float32 --interpret --repeats 2)
else
  # the device's platform for the tests too (tests/conftest.py defaults to the CPU)
  export JAX_PLATFORMS="${JAX_PLATFORMS:-$(python -c 'import jax; print({"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend()))')}"
  PARITY=(-k "match_hf or matches_hf")
  TRAIN=(bench train --preset accelerator-1b --steps 10 --warmup 2 --peer none)
  DECODE=(bench decode --preset accelerator --peer none --repeats 3)
  GROUND=(bench ground --queries 4096 --items 1000000 --dim 256 --peer none --repeats 3)
  ATTENTION=(bench attention)
fi

step() {  # step NAME SECONDS COMMAND...: stdout to OUT/NAME.out, stderr to OUT/NAME.err, status to OUT/NAME.rc
  local name="$1" limit="$2"; shift 2
  echo "accelerator_check: $name ..." >&2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  echo $? > "$OUT/$name.rc"
  echo "accelerator_check: $name done in $((SECONDS - start)) s (exit $(cat "$OUT/$name.rc"))" >&2
}

step parity 150 python -m pytest -p no:cacheprovider tests/test_models_llama.py tests/test_models_t5.py \
  tests/test_decode_hf_parity.py "${PARITY[@]}"
step train 150 "${JAXREC[@]}" "${TRAIN[@]}"
step decode 120 "${JAXREC[@]}" "${DECODE[@]}"
step ground 90 "${JAXREC[@]}" "${GROUND[@]}"
step attention 90 "${JAXREC[@]}" "${ATTENTION[@]}"

python - "$OUT" <<'EOF'
import json, pathlib, re, sys

out = pathlib.Path(sys.argv[1])
report, row = {}, []
for name in ("parity", "train", "decode", "ground", "attention"):
    rc = int((out / f"{name}.rc").read_text())
    text = (out / f"{name}.out").read_text()
    if name == "parity":
        counts = dict((k, int(v)) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", text))
        report[name] = {"exit": rc, **counts}
        row.append(f"parity {counts.get('passed', 0)} passed / {counts.get('failed', 0) + counts.get('error', 0)} failed")
        continue
    try:
        result = json.loads(text[text.index("{"):])
    except ValueError:
        err = (out / f"{name}.err").read_text().strip().splitlines()
        report[name] = {"exit": rc, "error": err[-1] if err else "no output"}
        row.append(f"{name} failed (exit {rc})")
        continue
    report[name] = {"exit": rc, **result}
    if name == "train":
        row.append(f"train {result['tokens_per_s']:,.0f} tokens/s, MFU {result['mfu']:.2f}")
    elif name == "decode":
        row.append(f"decode {result.get('users_per_s', 0):,.1f} users/s")
    elif name == "ground":
        row.append(f"ground {result.get('queries_per_s', 0):,.0f} queries/s, peak fraction "
                   f"{result.get('matmul_peak_fraction', 0):.2f}")
    else:
        row.append("attention " + ", ".join(f"{k} {v['step_ms']} ms" for k, v in result["kernels"].items()))
hardware = next((r["hardware"] for r in report.values() if isinstance(r.get("hardware"), dict)), {})
report["hardware"] = hardware
(out / "accelerator_check.json").write_text(json.dumps(report, indent=2))
device = f"{hardware.get('device_kind', '?')} x{hardware.get('device_count', '?')} ({hardware.get('backend', '?')})"
(out / "accelerator_check.md").write_text(
    "| date | device | results |\n|---|---|---|\n" f"| {hardware.get('date', '?')} | {device} | {'; '.join(row)} |\n")
print((out / "accelerator_check.md").read_text())
failed = [n for n, r in report.items() if isinstance(r, dict) and r.get("exit", 0) != 0]
sys.exit(1 if failed else 0)
EOF
