#!/usr/bin/env bash
# A one-node Slurm cluster on localhost (Debian's slurmctld, slurmd and munge), for segtop's
# Slurm tests. Needs root. Writes /etc/slurm/slurm.conf only when there is none or it is one
# this script wrote, so it never touches a real cluster's configuration.
#
#   scripts/slurm-test-cluster.sh install   apt-get install the daemons (once per machine)
#   scripts/slurm-test-cluster.sh start     configure and start them; waits until the node is idle
#   scripts/slurm-test-cluster.sh stop      stop them
#   scripts/slurm-test-cluster.sh status    sinfo
set -euo pipefail
# The daemons and munge's tools live in sbin, which not every root shell has on its PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

conf=/etc/slurm/slurm.conf
marker="# written by segtop's scripts/slurm-test-cluster.sh"

say() { printf 'slurm-test-cluster: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (it installs and starts system daemons)"

case "${1:-status}" in
install)
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
        exit 0
    fi
    say "installing slurmctld, slurmd, slurm-client and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
    ;;
start)
    command -v slurmctld >/dev/null || die "slurmctld is not installed: run '$0 install' first"
    if [ -f "$conf" ] && ! grep -qF "$marker" "$conf"; then
        die "$conf exists and was not written by this script: this machine has a Slurm of its own; not touching it"
    fi
    if sinfo -h -o %t >/dev/null 2>&1; then
        say "a cluster already answers: $(sinfo -h -o '%P %t')"
        exit 0
    fi
    if [ ! -f /etc/munge/munge.key ]; then
        mungekey --create
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        # munged refuses to run as root.
        install -d -o munge -g munge -m 0755 /run/munge
        runuser -u munge -- /usr/sbin/munged
    fi
    node=$(slurmd -C | head -n 1)
    field() { sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p" <<<"$node"; }
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    # A fresh state: job ids start at 1.
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
    cat >"$conf" <<CONF
$marker
ClusterName=segtop-test
SlurmctldHost=localhost
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherParams=OverMemoryKill
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
ReturnToService=2
MinJobAge=300
NodeName=localhost CPUs=$(field CPUs) Boards=1 SocketsPerBoard=$(field SocketsPerBoard) CoresPerSocket=$(field CoresPerSocket) ThreadsPerCore=$(field ThreadsPerCore) RealMemory=$(field RealMemory) NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    slurmctld
    slurmd
    for _ in $(seq 100); do
        [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && { say "one-node cluster up: $(sinfo -h -o '%P %c cpus %m MB')"; exit 0; }
        sleep 0.1
    done
    sinfo >&2 || true
    die "the node did not become idle; see /var/log/slurm/slurmctld.log and slurmd.log"
    ;;
stop)
    [ -f "$conf" ] && ! grep -qF "$marker" "$conf" && die "$conf was not written by this script; not stopping this machine's Slurm"
    # The pid files vanish before the daemons exit.
    pids="$(cat /run/slurmctld.pid /run/slurmd.pid 2>/dev/null || true)"
    scontrol shutdown 2>/dev/null || true
    for pid in $pids; do
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    done
    if [ -f /run/munge/munged.pid ]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true; fi
    ;;
status)
    sinfo
    ;;
*)
    die "unknown command '$1'; use install, start, stop or status"
    ;;
esac
