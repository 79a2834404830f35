#!/usr/bin/env bash
# Start a single-node SLURM cluster on this Debian 12 machine, as root (CI or a developer box).
#
#   .ci/slurm-setup.sh            # install (if needed), configure, start, wait until the node is idle
#   IRED_SLURM_ACCOUNTING=no .ci/slurm-setup.sh   # skip slurmdbd: sacct then does not work
#
# What it does, in order:
#   1. apt-get install slurm-wlm munge (and slurmdbd) when they are missing;
#   2. writes /etc/slurm/slurm.conf (one node named after `hostname -s`, CPUs and memory measured by
#      `slurmd -C`, partition `debug` as the default) and /etc/slurm/slurmdbd.conf;
#   3. starts munged (as the munge user), slurmdbd (accounting in the MariaDB at IRED_SLURM_DB_*),
#      slurmctld and slurmd, each only if it is not already running with the current config;
#   4. waits until `sinfo` shows the node idle (or busy with jobs).
# Running it again when everything is up changes nothing. On failure it prints what failed and the
# tail of the daemon's log, and exits 1.
#
# Accounting (slurmdbd) is on by default because `sacct` reads job states from it, and it
# is the only source that still knows a job's final state after slurmctld forgets it (MinJobAge).
# The service also works without it (ired_dcd/slurm/cluster.py falls back to squeue + scontrol).
set -euo pipefail

ACCOUNTING="${IRED_SLURM_ACCOUNTING:-yes}"
DB_HOST="${IRED_SLURM_DB_HOST:-127.0.0.1}"
DB_PORT="${IRED_SLURM_DB_PORT:-3306}"
DB_USER="${IRED_SLURM_DB_USER:-root}"
DB_PASS="${IRED_SLURM_DB_PASS:-}"
DB_NAME="${IRED_SLURM_DB_NAME:-slurm_acct_db}"
CLUSTER=ired
PARTITION=debug
NODE="$(hostname -s)"
CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
WAIT_S="${IRED_SLURM_WAIT_S:-60}"

log() { echo "slurm-setup: $*"; }

die() {
    echo "slurm-setup: ERROR: $1" >&2
    if [[ -n "${2:-}" && -f "$2" ]]; then
        echo "--- last lines of $2 ---" >&2
        tail -n 25 "$2" >&2
    fi
    exit 1
}

[[ "$(id -u)" == 0 ]] || die "must run as root"
case "$ACCOUNTING" in yes | no) ;; *) die "IRED_SLURM_ACCOUNTING must be yes or no, got '$ACCOUNTING'" ;; esac

# A daemon is running when its pid file names a live process with the expected command name.
running() {
    local pidfile=$1 name=$2 pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]
}

stop_daemon() {
    local pidfile=$1 name=$2 pid
    running "$pidfile" "$name" || return 0
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid) to apply the new config"
    kill "$pid"
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    die "$name (pid $pid) did not stop within 10 s"
}

# Wait until "$@" succeeds, for at most $1 seconds.
wait_for() {
    local limit=$1
    shift
    for _ in $(seq 1 $((limit * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

# Write $1 from stdin if its content changed; returns 0 when the file was (re)written.
write_if_changed() {
    local path=$1 mode=$2 tmp
    tmp="$(mktemp)"
    cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 1
    fi
    install -m "$mode" "$tmp" "$path"
    rm -f "$tmp"
    log "wrote $path"
    return 0
}

# 1. packages ---------------------------------------------------------------------------------------
packages=(slurm-wlm munge)
[[ "$ACCOUNTING" == yes ]] && packages+=(slurmdbd)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # Keep package scripts from starting daemons with the packaged config (no init system here).
    policy_created=no
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_created=yes
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt_rc=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/slurm-setup-apt.log 2>&1 || apt_rc=$?
    [[ "$policy_created" == yes ]] && rm -f /usr/sbin/policy-rc.d
    ((apt_rc == 0)) || die "apt-get install ${missing[*]} failed" /tmp/slurm-setup-apt.log
fi

# 2. munge ------------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! running /run/munge/munged.pid munged; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged did not start" /var/log/munge/munged.log
fi
wait_for 10 bash -c 'munge -n | unmunge' || die "munge round trip failed" /var/log/munge/munged.log

# 3. config -----------------------------------------------------------------------------------------
install -d -m 0755 "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
hw="$(slurmd -C | head -n 1)"
cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")"
mem_mb="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")"
[[ -n "$cpus" && -n "$mem_mb" ]] || die "could not read CPUs/RealMemory from 'slurmd -C': $hw"

if [[ "$ACCOUNTING" == yes ]]; then
    accounting_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
else
    accounting_lines="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

slurm_conf_changed=no
# CPUs only (no socket/core/thread layout) so that every CPU can take its own job; config_overrides
# keeps slurmd from draining the node over a layout it reports differently. cred_expire also sets how
# long a requeued job waits before it may start again (default 120 s): short here, for the tests.
write_if_changed "$CONF_DIR/slurm.conf" 0644 <<EOF && slurm_conf_changed=yes
# Written by .ci/slurm-setup.sh: a single-node cluster for tests. Do not edit by hand.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=15
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=10
$accounting_lines
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# 4. slurmdbd ---------------------------------------------------------------------------------------
if [[ "$ACCOUNTING" == yes ]]; then
    db_up() { timeout 3 bash -c "</dev/tcp/$DB_HOST/$DB_PORT" 2>/dev/null; }
    if ! db_up && [[ "$DB_HOST" == 127.0.0.1 || "$DB_HOST" == localhost ]] && [[ -x /etc/init.d/mariadb ]]; then
        log "starting the local MariaDB"
        /etc/init.d/mariadb start >/dev/null 2>&1 || true
        wait_for 30 db_up || true
    fi
    db_up || die "no database at $DB_HOST:$DB_PORT for slurmdbd (start MariaDB, set IRED_SLURM_DB_*, or IRED_SLURM_ACCOUNTING=no)"
    dbd_changed=no
    write_if_changed "$CONF_DIR/slurmdbd.conf" 0600 <<EOF && dbd_changed=yes
# Written by .ci/slurm-setup.sh. Do not edit by hand.
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=$DB_HOST
StoragePort=$DB_PORT
StorageUser=$DB_USER
${DB_PASS:+StoragePass=$DB_PASS}
StorageLoc=$DB_NAME
EOF
    [[ "$dbd_changed" == yes ]] && stop_daemon /run/slurmdbd.pid slurmdbd
    if ! running /run/slurmdbd.pid slurmdbd; then
        log "starting slurmdbd"
        slurmdbd || die "slurmdbd did not start" "$LOG_DIR/slurmdbd.log"
    fi
    wait_for 30 sacctmgr -n list cluster ||
        die "slurmdbd does not answer (sacctmgr list cluster)" "$LOG_DIR/slurmdbd.log"
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in the accounting database"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed" "$LOG_DIR/slurmdbd.log"
    fi
fi

# 5. slurmctld and slurmd ---------------------------------------------------------------------------
if [[ "$slurm_conf_changed" == yes ]]; then
    stop_daemon /run/slurmd.pid slurmd
    stop_daemon /run/slurmctld.pid slurmctld
fi
if ! running /run/slurmctld.pid slurmctld; then
    log "starting slurmctld"
    slurmctld || die "slurmctld did not start" "$LOG_DIR/slurmctld.log"
fi
wait_for 30 bash -c 'scontrol ping | grep -q "is UP"' || die "slurmctld does not answer" "$LOG_DIR/slurmctld.log"
if ! running /run/slurmd.pid slurmd; then
    log "starting slurmd"
    slurmd || die "slurmd did not start" "$LOG_DIR/slurmd.log"
fi

# 6. wait for the node ------------------------------------------------------------------------------
node_ready() {
    local state
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1)"
    case "$state" in
        idle | mixed | allocated | completing) return 0 ;;
        down* | drain* | fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    return 1
}
wait_for "$WAIT_S" node_ready ||
    die "node $NODE is not idle after ${WAIT_S} s (sinfo: $(sinfo -h -N -o '%N %T %E' 2>&1))" "$LOG_DIR/slurmd.log"
log "ready: node $NODE ($cpus CPUs, $mem_mb MB), partition $PARTITION, accounting=$ACCOUNTING"
