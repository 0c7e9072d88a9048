#!/usr/bin/env bash
# GPU check for the ResT model and harness, at most GPU_CHECK_SECONDS (default 290 s) on
# one GPU, in this order (what the time does not cover is reported as skipped; raise the bound to get all):
#   1. the CUDA-only tests (fp32 equivalence with TF32 off, AMP training step, NCCL process group with one GPU,
#      the trainer under float16 and bfloat16 autocast);
#   2. the interleaved throughput tables against benchmarks/official_rest.py (python -m benchmarks.model
#      --versus-reference) on CUDA: fp32, AMP (float16 autocast), AMP + channels_last, AMP + torch.compile,
#      AMP training step;
#   3. the harness end to end on CUDA: the main job (sweeps/pe.yaml, quick recipe, seed 0) shortened to one
#      epoch so that it fits the bound (three epochs take 75 s on an H100), then its table; each result.json
#      must name the CUDA device;
#   4. MSA vs EMSA at 224/320/448 px with peak memory, AMP at batch 256;
#   5. the training throughput again under torch.compile (train.compile=inductor), its compiling timed.
# Right after the CUDA-only tests: the paper-ablation protocol's training throughput (python -m
# benchmarks.throughput): model-bound, the harness's data path from a synthetic ImageNet-like JPEG folder,
# and timm's train.py on the same data when $TIMM_TRAIN (default .cache/timm/train.py, an ignored path that
# travels to a lent GPU machine with `carry`) holds it: git -C <timm checkout> show HEAD:train.py > it; then
# where a loader worker's time goes on the node's CPU (python -m benchmarks.loader); (a) and (b) again under
# bfloat16 autocast (train.amp=bfloat16).
# Without a GPU it says so and exits 0, measuring nothing. Output also goes to $GPU_CHECK_OUT (default
# gpu_check_out/): one CSV per table and log.txt; copy the card and the numbers into BENCHMARKS.md.
#
#   bash scripts/gpu_check.sh            # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; }; then
    echo "gpu_check: no GPU on this machine (nvidia-smi lists none): no numbers measured, no CUDA tests run."
    exit 0
fi
OUT=${GPU_CHECK_OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

echo "== card"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
# one interpreter start for all three questions (each start of torch costs seconds of the bounded time)
set +e
probe=$("$PY" -c '
import sys
try:
    import timm, torch
except ImportError as error:
    sys.exit(f"gpu_check: there is a GPU, but {sys.executable} cannot import torch and timm ({error}); "
             "set PYTHON to the project interpreter")
if not torch.cuda.is_available():
    sys.exit("gpu_check: nvidia-smi lists a GPU but torch.cuda.is_available() is False (a CPU-only torch build?)")
print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__, "device",
      torch.cuda.get_device_name())
print("bfloat16", "native" if torch.cuda.is_bf16_supported(including_emulation=False) else "none")')
ready=$?
set -e
echo "$probe"
(( ready == 0 )) || exit 1
bf16=none
[[ "$probe" == *"bfloat16 native"* ]] && bf16=native

# The whole check is bounded: each section gets what it needs or what is left of GPU_CHECK_SECONDS (default
# 290 s, under 5 minutes), correctness first: a table that the time does not cover is reported as skipped.
DEADLINE=${GPU_CHECK_SECONDS:-290}
allowed() {  # seconds a section may take: its own limit, or what is left (0: nothing left)
    local want=$1 left=$((DEADLINE - SECONDS - 5))
    if (( left < 10 )); then echo 0; elif (( left < want )); then echo "$left"; else echo "$want"; fi
}

status=0
echo "== CUDA-only tests"
limit=$(allowed 120)
if (( limit == 0 )); then
    echo "gpu_check: no time left for the CUDA-only tests (GPU_CHECK_SECONDS=${DEADLINE})"; status=1
else
    timeout "$limit" "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_model.py tests/test_train.py -k cuda \
        || status=1
fi
echo "($SECONDS s since the start)"

echo "== the paper-ablation protocol's training throughput (ResT-Lite, 224 px, batch 2048 as 8 x 256, AMP)"
limit=$(allowed 150)
TIMM_TRAIN=${TIMM_TRAIN:-.cache/timm/train.py}
timm_flag=()
if [[ -f "$TIMM_TRAIN" ]]; then timm_flag=(--timm-train "$TIMM_TRAIN"); else echo "(c) skipped: no $TIMM_TRAIN"; fi
if (( limit == 0 )); then
    echo "gpu_check: no time left for the throughput benchmark"; status=1
else
    timeout "$limit" "$PY" -m benchmarks.throughput --recipe paper-ablation --synthetic 64 --images 8192 \
        --warmup 5 --steps 20 --timm-timeout 60 ${timm_flag[@]+"${timm_flag[@]}"} --json "$OUT/throughput.json" \
        || status=1
fi
echo "($SECONDS s since the start)"
echo "== where a loader worker's time goes on this node's CPU (python -m benchmarks.loader, one process)"
limit=$(allowed 25)
if (( limit == 0 )); then
    echo "gpu_check: no time left for the loader profile"
else
    timeout "$limit" "$PY" -m benchmarks.loader --recipe paper-ablation --synthetic 8 --samples 300 \
        --json "$OUT/loader_profile.json" || echo "gpu_check: the loader profile gave no figures (exit $?)"
fi
echo "($SECONDS s since the start)"
echo "== the same in bfloat16 autocast (train.amp=bfloat16: no loss scaler; (a) and (b) only)"
throughput_with() {  # seconds wanted, what, the --set it varies, the JSON file: (a) and (b) only
    local limit code
    limit=$(allowed "$1")
    if (( limit == 0 )); then echo "gpu_check: no time left for the $2 throughput"; return; fi
    timeout "$limit" "$PY" -m benchmarks.throughput --recipe paper-ablation --synthetic 64 --images 8192 \
        --warmup 5 --steps 20 --set "$3" --json "$OUT/$4" || {
        code=$?
        if (( code == 124 )); then echo "gpu_check: the $2 throughput was stopped at ${limit} s: not measured"
        else echo "gpu_check: the $2 throughput failed (exit $code)"; status=1; fi
    }
}
if [[ $bf16 != native ]]; then
    echo "skipped: this card has no native bfloat16 (train.amp=bfloat16 fails a run there, by design)"
else
    throughput_with 60 bfloat16 train.amp=bfloat16 throughput_bf16.json
fi
echo "($SECONDS s since the start)"

bench() {  # seconds wanted, name, then benchmarks.model arguments
    local limit want=$1 name=$2 code
    limit=$(allowed "$want"); shift 2
    if (( limit == 0 )); then
        echo "== $name: skipped, the check's ${DEADLINE} s are spent"; return
    fi
    echo "== $name: python -m benchmarks.model $*"
    rm -f "$OUT/$name.csv"  # a table left by an earlier check must not pass for this one's
    timeout "$limit" "$PY" -m benchmarks.model --device cuda --rounds 7 --warmup 3 "$@" --csv "$OUT/$name.csv" || {
        code=$?
        if (( code == 124 )) && [[ -s "$OUT/$name.csv" ]]; then  # measured; only the interpreter's exit was cut
            echo "gpu_check: $name wrote its table, then its exit was cut at ${limit} s"
        elif (( code == 124 && limit < want )); then  # cut by the check's bound, not by its own limit
            echo "gpu_check: $name was stopped by the check's ${DEADLINE} s bound after ${limit} s;" \
                 "not measured: rerun with a larger GPU_CHECK_SECONDS"
        elif (( code == 124 )); then
            echo "gpu_check: $name did not finish within its own ${limit} s"; status=1
        else
            echo "gpu_check: $name failed (exit $code)"; status=1
        fi
    }
    echo "($SECONDS s since the start)"
}

bench 40 infer_fp32 --versus-reference --iters 10
bench 40 infer_amp --versus-reference --iters 10 --amp
bench 35 infer_amp_channels_last --versus-reference --iters 5 --amp --channels-last
bench 75 infer_amp_compile --versus-reference rest_lite --iters 10 --amp --compile
bench 45 train_amp --versus-reference --train --iters 3 --amp

E2E=$(mktemp -d)
want=60
limit=$(allowed "$want")
if (( limit == 0 )); then
    echo "== the main job on CUDA: skipped, the check's ${DEADLINE} s are spent"
elif echo "== the main job on CUDA (sweeps/pe.yaml, quick recipe, seed 0, one epoch)" && timeout "$limit" "$PY" -m ablations.run sweeps/pe.yaml --seeds 0 --results-root "$E2E" \
        --executor local --no-progress --logger none --set train.epochs=1; then
    "$PY" -m analysis.tables sweeps/pe.yaml --seeds 0 --results-root "$E2E" --set train.epochs=1 || status=1
    "$PY" - "$E2E" <<'PY' || status=1
import json, sys
from pathlib import Path
results = sorted(Path(sys.argv[1]).glob("*/*/result.json"))
assert len(results) == 4, f"expected 4 finished runs, found {len(results)}"
for path in results:
    result = json.loads(path.read_text())
    print(path.parent.name, result["device"], f"top-1 {result['final']['top1']:.2f}",
          f"train {result['train_img_s']:.0f} img/s", f"wall {result['wall_time_s']:.1f} s")
    assert result["device"].startswith("cuda"), f"{path}: trained on {result['device']}, not CUDA"
PY
else
    code=$?
    if (( code == 124 && limit < want )); then  # cut by the check's bound, not by its own limit
        echo "gpu_check: the main job was stopped by the check's ${DEADLINE} s bound after ${limit} s;" \
             "not verified: rerun with a larger GPU_CHECK_SECONDS"
    else
        echo "gpu_check: the main job failed on CUDA (exit $code, limit ${limit} s)"; status=1
    fi
fi
rm -rf "$E2E"
echo "($SECONDS s since the start)"

bench 30 scaling_fp32 --scaling --batch-size 32 --iters 5
bench 30 infer_amp_b256 --versus-reference --iters 3 --amp --batch-size 256 --rounds 5

echo "== the training throughput under torch.compile (train.compile=inductor; (a) and (b), compiling timed)"
throughput_with 150 compiled train.compile=inductor throughput_compile.json
echo "gpu_check: done in $SECONDS s (bound: ${DEADLINE} s)"
exit $status
