#!/usr/bin/env bash
# Install (from Debian's packages) and start the two servers the tests run against:
# PostgreSQL on 127.0.0.1:5432 with trust authentication for local connections, and
# Redis on 127.0.0.1:6379. Idempotent: what is installed stays, what runs keeps running.
#
#   scripts/start-services.sh          install what is missing, start what is stopped
#
# Needs root for the first install. Exits non-zero, saying why, when a server cannot be had:
# the tests fail rather than skip without them.
set -euo pipefail

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

reachable() { timeout 2 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
  local name=$1 port=$2 i
  for i in $(seq 1 60); do
    reachable "$port" && return 0
    sleep 0.5
  done
  die "$name did not start listening on 127.0.0.1:$port within 30 s"
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  [[ $(id -u) -eq 0 ]] || die "$* not installed and not root: install them with apt-get, or run this script as root"
  log "installing from Debian's packages: $*"
  # Package scripts try to start the servers through an init system; there may be none.
  # policy-rc.d tells them not to: this script starts them itself.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  if ! apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
  fi
  ((created_policy)) && rm -f "$policy"
  return 0
}

# --- PostgreSQL ---------------------------------------------------------------------------------
start_postgresql() {
  if reachable 5432; then
    log "PostgreSQL already listens on 127.0.0.1:5432"
    return
  fi
  command -v pg_lsclusters >/dev/null 2>&1 || apt_install postgresql
  local version cluster
  read -r version cluster _ < <(pg_lsclusters --no-header | head -n 1) || true
  if [[ -z ${version:-} ]]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    cluster=main
    log "creating PostgreSQL cluster $version/$cluster"
    pg_createcluster "$version" "$cluster" >/dev/null
  fi
  local conf=/etc/postgresql/$version/$cluster
  # Trust for connections from this machine only; the tests connect as postgres without a password.
  cat >"$conf/pg_hba.conf" <<'HBA'
# Written by scripts/start-services.sh: local connections are trusted (a test machine).
local   all   all                  trust
host    all   all   127.0.0.1/32   trust
host    all   all   ::1/128        trust
HBA
  # A test server: durability is not what it is for, and parallel test workers want connections.
  mkdir -p "$conf/conf.d"
  cat >"$conf/conf.d/stackblaze-tests.conf" <<'CONF'
listen_addresses = '127.0.0.1'
port = 5432
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  log "starting PostgreSQL $version/$cluster"
  pg_ctlcluster "$version" "$cluster" start || die "PostgreSQL $version/$cluster did not start (see /var/log/postgresql/)"
  wait_for PostgreSQL 5432
}

# --- Redis --------------------------------------------------------------------------------------
start_redis() {
  if reachable 6379; then
    log "Redis already listens on 127.0.0.1:6379"
    return
  fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  log "starting Redis"
  mkdir -p /var/lib/stackblaze-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no \
    --dir /var/lib/stackblaze-redis --logfile /var/lib/stackblaze-redis/redis.log \
    || die "redis-server did not start"
  wait_for Redis 6379
}

start_postgresql
start_redis
log "PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 are up"
