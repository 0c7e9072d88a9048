#!/usr/bin/env bash
# Stop the daemons started by scripts/slurm/start.sh, in reverse order, by PID from their pid files under
# $REST_SLURM_DIR (default /tmp/rest-slurm). A daemon that start.sh found already running (and so did not
# start) has no pid file there and is left alone.
set -uo pipefail
T=${REST_SLURM_DIR:-/tmp/rest-slurm}

stop_pid() {  # $1 = name, $2 = pid file
  [ -s "$2" ] || { echo "$1: no pid file ($2)"; return 0; }
  local p; p=$(cat "$2")
  if ! kill -0 "$p" 2>/dev/null; then echo "$1: pid $p not running"; return 0; fi
  kill -TERM "$p"
  for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$p" 2>/dev/null; then echo "$1 ($p) did not exit, sending KILL"; kill -KILL "$p"; else echo "$1 ($p) stopped"; fi
}
stop_pid slurmd    "$T/slurmd.pid"
stop_pid slurmctld "$T/slurmctld.pid"
stop_pid slurmdbd  "$T/slurmdbd.pid"
stop_pid mariadbd  "$T/mysql/mariadb.pid"
stop_pid munged    "$T/munge/munged.pid"
