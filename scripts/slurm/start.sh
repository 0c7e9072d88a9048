#!/usr/bin/env bash
# Start a single-node Slurm 22.05 cluster on loopback: munge, MariaDB (unix socket only), slurmdbd (so that
# sacct works), slurmctld, slurmd; CPUs = nproc, memory = what slurmd measures on this machine.
# For the SLURM tests and for trying sweeps with `--executor slurm` on one machine. Run as root (Debian 12).
#
# Idempotent: installs the Debian packages only if missing, starts only the daemons that do not answer.
# Mutable state (pid files, logs, spool, saved state) lives under $REST_SLURM_DIR (default /tmp/rest-slurm).
# Stop with scripts/slurm/stop.sh (by PID, from the pid files written here).
# Exit status: 0 running, 3 the Debian packages could not be installed, 1 anything else.
set -euo pipefail
T=${REST_SLURM_DIR:-/tmp/rest-slurm}
H=$(hostname -s)
export DEBIAN_FRONTEND=noninteractive

listening() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_until() {  # $1 = what, $2 = seconds, rest = command that succeeds when ready
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 $((seconds * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "start.sh: $what not ready after ${seconds}s; logs in $T/log" >&2; exit 1
}
node_ready() { sinfo -h -n "$H" -o %T | grep -Eqx 'idle|mixed|allocated'; }

missing=()
for cmd in slurmctld slurmd sbatch slurmdbd munged mariadbd; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
if [ ${#missing[@]} -gt 0 ]; then
  # postinst prints "policy-rc.d denied execution of start" where there is no init system: expected
  { apt-get update -q && apt-get install -y -q --no-install-recommends \
      slurmctld slurmd slurm-client slurmdbd munge mariadb-server; } || { echo "start.sh: apt-get failed" >&2; exit 3; }
fi

mkdir -p "$T/state" "$T/spool" "$T/log"
getent hosts "$H" >/dev/null || echo "127.0.0.1 $H" >> /etc/hosts

# --- munge (the package's postinst created /etc/munge/munge.key)
[ -f /etc/munge/munge.key ] || mungekey --create
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0755 "$T/munge"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --pid-file="$T/munge/munged.pid"  # forks
  wait_until munged 15 bash -c 'munge -n | unmunge'
fi

# --- MariaDB for slurmdbd; no TCP. Its pid/log folder must be writable by mysql (else it segfaults)
install -d -o mysql -g mysql "$T/mysql"; install -d -o mysql -g root /run/mysqld
if ! mariadb -u root -e 'select 1' >/dev/null 2>&1; then
  setsid /usr/sbin/mariadbd --user=mysql --skip-networking \
    --pid-file="$T/mysql/mariadb.pid" --log-error="$T/mysql/mariadb.err" </dev/null >/dev/null 2>&1 &
  wait_until mariadb 30 mariadb -u root -e 'select 1'
fi
mariadb -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# --- configs
mem_mb=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
[ -n "$mem_mb" ] || mem_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=${H}
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$T/log/slurmdbd.log
PidFile=$T/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf  # slurmdbd refuses a group/world-readable file

cat > /etc/slurm/slurm.conf <<EOF
ClusterName=rest
SlurmctldHost=${H}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job waits cred_expire seconds before it starts again (default 120)
AuthInfo=cred_expire=10
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
MaxArraySize=1001
NodeName=${H} NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${H} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

# --- daemons, each started only if its port does not answer (each forks and writes its pid file)
listening 6819 || slurmdbd
wait_until slurmdbd 30 listening 6819
listening 6817 || slurmctld
listening 6818 || slurmd
wait_until "node $H" 60 node_ready
sinfo
sacctmgr -n list cluster format=cluster%20,controlhost
