#!/usr/bin/env bash
# Mutation testing of ired_core's training components with mutmut (docs/testing.md, "Mutation testing").
#
#   bench/mutation.sh                  all six modules: losses filters replay samplers schedule trainer
#   bench/mutation.sh schedule losses  only these modules
#   bench/mutation.sh 'ired_core.trainer.*train_step*'   only the mutants matching a mutmut name pattern
#   bench/mutation.sh --report [--survivors] [MODULE ...]   the scores of the last run, without running
#
# Each run starts from a fresh mutants/ copy, so the scores are those of the code and tests as they are now.
# One worker and one torch thread: the machine is shared with training jobs.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTMUT_VERSION=3.8.1
MODULES=(losses filters replay samplers schedule trainer)
PYTHON=.venv/bin/python

if [[ "${1:-}" == "--report" ]]; then
    shift
    exec "$PYTHON" bench/mutation_report.py "$@"
fi

if [[ "$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("mutmut"))' 2>/dev/null)" != "$MUTMUT_VERSION" ]]; then
    .venv/bin/pip install --quiet "mutmut==$MUTMUT_VERSION"
fi

patterns=()
report_modules=()
for arg in "${@:-${MODULES[@]}}"; do
    if [[ " ${MODULES[*]} " == *" $arg "* ]]; then
        patterns+=("ired_core.$arg.*")
        report_modules+=("$arg")
    elif [[ "$arg" == ired_core.* ]]; then
        patterns+=("$arg")
    else
        echo "unknown module $arg; valid: ${MODULES[*]}, or a mutant pattern ired_core.<module>.…" >&2
        exit 2
    fi
done

rm -rf mutants && mkdir mutants
start=$SECONDS
# naming the mutants makes mutmut run exactly these (and again, where an earlier run checked them already)
if ! OMP_NUM_THREADS=1 .venv/bin/mutmut run --max-children 1 "${patterns[@]}" >mutants/run.log 2>&1; then
    tail -n 40 mutants/run.log >&2
    exit 1
fi
echo "ran in $(((SECONDS - start + 30) / 60)) min ($(grep -ao '[0-9.]* mutations/second' mutants/run.log)); log: mutants/run.log"
"$PYTHON" bench/mutation_report.py "${report_modules[@]}"
