#!/usr/bin/env bash
# Stop the single-node SLURM started by .ci/slurm-setup.sh (slurmd, slurmctld, slurmdbd, munged), each
# by the pid in its pid file. Packages, config and the accounting database stay; running
# .ci/slurm-setup.sh again brings the cluster back with its job state.
set -euo pipefail

stop() {
    local pidfile=$1 name=$2 pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(cat "$pidfile" 2>/dev/null)" || return 0
    [[ "$pid" =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] || return 0
    echo "slurm-teardown: stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    echo "slurm-teardown: ERROR: $name (pid $pid) still running after 10 s" >&2
    return 1
}

stop /run/slurmd.pid slurmd
stop /run/slurmctld.pid slurmctld
stop /run/slurmdbd.pid slurmdbd
stop /run/munge/munged.pid munged
