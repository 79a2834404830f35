#!/usr/bin/env bash
# Everything the engine work (issue 13) needs measured on a GPU, in one unattended command that ends
# inside 8 minutes. Each part has its own timeout and its output is kept as it comes, so a part that
# fails or runs out of time costs only itself; every figure is printed beside the device's name.
#
#   bash bench/device_check.sh --fetch-wheels   # here, once: the wheels the GPU image lacks, into .whl/
#   bash bench/device_check.sh                  # there, from the repository root (carry .whl)
#   bash bench/device_check.sh --cpu-smoke      # every part in its tiny CPU form, in seconds (CI)
#
# Parts, in order of what matters most when time is short:
#   1. training throughput, seed-steps/s at S = 1 and S = 10, batch 2048, for q100, Q-201…Q-204 and the
#      stabilised arms, eager against the engines reuse and compiled, in tf32, then bf16, then fp32
#      (bench/train_throughput.py)
#   2. evaluation time of 10 seeds on the full held-out sets (bench/eval_time.py)
#   3. a profile of the q204 step at S = 10: GPU-busy fraction, kernels per step, top 15 kernels
#      (bench/profile_step.py), with the engine reuse and then compiled
#   4. the precision study, short: q100 and Q-204s, 3 seeds, 1,000 steps, in tf32, bf16 and fp32, each
#      a pilot (bench/pilot.py) that prints val_mse per config against q100
# Results: $OUT (where the device tool collects files) or runs/device-check-<UTC time>: one log per
# part and summary.md with all of them. Exit status 1 when a part failed, timed out or was skipped.
# DEVICE_CHECK_BUDGET_S overrides the overall budget (470 s on the GPU, 240 s for the smoke).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

mode=gpu
case "${1:-}" in
    --cpu-smoke) mode=cpu ;;
    --fetch-wheels)
        # the GPU image has torch, numpy and scipy but not pydantic (/work/.library/device/KINDS.md)
        rm -rf .whl && mkdir -p .whl
        for wheel in pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.7.0 typing-inspection==0.4.2; do
            python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
                --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$wheel" || exit 1
        done
        ls .whl
        exit 0
        ;;
    "") ;;
    *) echo "usage: bash bench/device_check.sh [--cpu-smoke | --fetch-wheels]" >&2; exit 2 ;;
esac

out=${OUT:-runs/device-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
summary="$out/summary.md"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
[ "$mode" = cpu ] && [ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
if [ "$mode" = gpu ] && [ -d .whl ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
# all parts together; the machine's start is outside it
budget_s=${DEVICE_CHECK_BUDGET_S:-$([ "$mode" = cpu ] && echo 240 || echo 470)}
started=$SECONDS
failed=0

# part NAME LIMIT_S COMMAND...: run with a timeout that never passes the overall budget; keep its log
part() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget_s - (SECONDS - started)))
    if [ "$left" -lt 10 ]; then
        echo "## $name: skipped, the budget is spent" | tee -a "$summary"
        failed=$((failed + 1))
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "## $name (limit ${limit} s)" | tee -a "$summary"
    local began=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    local status=$?
    grep -v "^USDT:" "$out/$name.log" | tee -a "$summary"
    if [ "$status" -ne 0 ]; then
        failed=$((failed + 1))
        echo "(exit $status after $((SECONDS - began)) s$([ "$status" -eq 124 ] && echo ': timed out'))" | tee -a "$summary"
    fi
    echo | tee -a "$summary"
}

presets=q100,q201,q202,q203,q204,q202s,q203s,q204s
{
    echo "# device check — $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    echo
} | tee "$summary"
part environment 30 "$python" -c "
import platform, torch
print('python', platform.python_version(), '· torch', torch.__version__, '· cuda', torch.version.cuda)
print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu (' + platform.machine() + ')')"
if [ "$mode" = cpu ]; then
    part throughput 120 "$python" bench/train_throughput.py --tiny --seeds 2 --presets q100,q204s
    part eval_time 60 "$python" bench/eval_time.py --tiny --seeds 2
    part profile 60 "$python" bench/profile_step.py --tiny
    part profile_compiled 60 "$python" bench/profile_step.py --tiny --engine compiled
    part precision_tf32 60 "$python" bench/pilot.py --tiny --configs q100,q204s --out "$out/precision_tf32"
else
    # the compiled engine compiles in its warm-up steps (once per process and precision): it is timed in
    # tf32 and bf16; fp32, the slowest and least likely default, times reuse only
    part throughput_tf32 140 "$python" bench/train_throughput.py --device cuda --seeds 10 \
        --steps 20 --warmup 5 --precision tf32 --presets "$presets" --engines reuse,compiled
    part throughput_bf16 100 "$python" bench/train_throughput.py --device cuda --seeds 10 \
        --steps 20 --warmup 5 --precision bf16 --presets "$presets" --engines reuse,compiled
    part throughput_fp32 60 "$python" bench/train_throughput.py --device cuda --seeds 10 \
        --steps 20 --warmup 3 --precision fp32 --presets "$presets" --engines reuse
    part eval_time 30 "$python" bench/eval_time.py --device cuda --seeds 10
    part profile 35 "$python" bench/profile_step.py --device cuda --preset q204 --seeds 10 --steps 10
    part profile_compiled 35 "$python" bench/profile_step.py --device cuda --preset q204 --seeds 10 --steps 10 \
        --engine compiled
    for precision in tf32 bf16 fp32; do
        part "precision_$precision" 40 "$python" bench/pilot.py --device cuda --configs q100,q204s --seeds 0-2 \
            --steps 1000 --budget 35 --set "precision=$precision" --out "$out/precision_$precision"
    done
fi
echo "device check: $((SECONDS - started)) s, $failed part(s) failed or skipped; all output in $summary" |
    tee -a "$summary"
[ "$failed" -eq 0 ]
