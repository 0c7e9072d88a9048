#!/usr/bin/env bash
# GPU check for the ResT model and harness (issue 9, point 11), about 6-7 minutes on one GPU (an H100 took 375 s):
#   1. the interleaved throughput table against rest/reference.py (python -m rest.benchmark --versus-reference)
#      on CUDA: fp32, AMP (float16 autocast), AMP + channels_last, AMP at batch 256, AMP + torch.compile,
#      AMP training step; MSA vs EMSA at 224/320/448 px with peak memory;
#   2. the CUDA-only tests (fp32 equivalence with TF32 off, AMP training step, NCCL process group with one GPU);
#   3. the harness end to end on CUDA: the main job (sweeps/pe.yaml, quick recipe, seed 0) with AMP and
#      channels_last, then its table; each result.json must name the CUDA device.
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
if ! "$PY" -c 'import torch, timm' 2>/dev/null; then
    echo "gpu_check: there is a GPU, but $PY cannot import torch and timm; set PYTHON to the project's interpreter" >&2
    exit 1
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: nvidia-smi lists a GPU but torch.cuda.is_available() is False (a CPU-only torch build?)" >&2
    exit 1
fi

OUT=${GPU_CHECK_OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1

echo "== card"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__,
"device", torch.cuda.get_device_name())'

bench() {  # seconds allowed, name, then rest.benchmark arguments (all tables: at most 6 min)
    local limit=$1 name=$2; shift 2
    echo "== $name: python -m rest.benchmark $*"
    timeout "$limit" "$PY" -m rest.benchmark --device cuda --rounds 7 --warmup 5 "$@" --csv "$OUT/$name.csv" \
        || echo "gpu_check: $name did not finish (exit $?)"
    echo "($SECONDS s since the start)"
}

status=0
bench 40 infer_fp32 --versus-reference --iters 10
bench 40 infer_amp --versus-reference --iters 10 --amp
bench 40 infer_amp_channels_last --versus-reference --iters 10 --amp --channels-last
bench 40 infer_amp_b256 --versus-reference --iters 5 --amp --batch-size 256
bench 90 infer_amp_compile --versus-reference rest_lite --iters 10 --amp --compile
bench 80 train_amp --versus-reference --train --iters 5 --amp
bench 30 scaling_fp32 --scaling --batch-size 32 --iters 5

echo "== CUDA-only tests"
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_model.py -k cuda || status=1

echo "== the main job on CUDA (sweeps/pe.yaml, quick recipe, seed 0)"
E2E=$(mktemp -d)
if timeout 150 "$PY" -m ablations.run sweeps/pe.yaml --seeds 0 --results-root "$E2E" --executor local \
        --no-progress --logger none; then
    "$PY" -m analysis.tables sweeps/pe.yaml --seeds 0 --results-root "$E2E" || status=1
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
    echo "gpu_check: the main job did not finish on CUDA (exit $?)"; status=1
fi
rm -rf "$E2E"
exit $status
