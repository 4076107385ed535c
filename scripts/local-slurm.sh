#!/usr/bin/env bash
# Start (or stop) a real single-node Slurm on this machine, for the `slurm` tests and for
# trying the sbatch path locally. Needs root; installs Debian's slurm-wlm and munge if absent.
#
#   scripts/local-slurm.sh start    # idempotent; waits until the node is idle
#   scripts/local-slurm.sh stop
#   scripts/local-slurm.sh status
set -euo pipefail

STATE=${LLMFORGE_SLURM_DIR:-/tmp/llmforge-slurm}
CONF=/etc/slurm/slurm.conf

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_munge_key() {
    [ -s /etc/munge/munge.key ] && return
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
}

# Not `nproc`: it honours OMP_NUM_THREADS, and `make test` sets that to 1.
online_cpus() { getconf _NPROCESSORS_ONLN; }

write_conf() {
    local host cpus mem
    host=$(hostname -s)
    cpus=$(online_cpus)
    # RealMemory a little under what is free, in MB
    mem=$(awk '/MemAvailable/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    mkdir -p /etc/slurm "$STATE/spool" "$STATE/state"
    cat >"$CONF" <<EOF
ClusterName=llmforge-local
SlurmctldHost=$host
SlurmUser=root
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
JobRequeue=1
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

start() {
    install_packages
    write_munge_key
    write_conf
    # A Slurm left running with another CPU count (an older config) would queue 2-CPU jobs
    # forever (reason PartitionConfig): restart it on the new config.
    if pgrep -x slurmctld >/dev/null &&
        [ "$(sinfo -h -N -o %c 2>/dev/null | head -1)" != "$(online_cpus)" ]; then
        stop
        sleep 2
    fi
    mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged" 2>/dev/null || munged --force
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 1 60); do
        if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then
            scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
            echo "slurm is up: $(sinfo -h -o '%P %T %C')" >&2
            return 0
        fi
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "slurm did not come up; see $STATE/*.log" >&2
    return 1
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) sinfo; squeue ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
