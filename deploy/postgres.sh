#!/usr/bin/env bash
# deploy/postgres.sh - a private, loopback-only PostgreSQL for development,
# tests and benchmarks (used by `make run`, `make test`, `make bench`).
#
# Usage: deploy/postgres.sh [start|url|stop|status|help]
#
#   start   (default) make sure the private cluster is initialised and running
#           and that database "strata" exists, then print the connection URL
#           (over the cluster's Unix socket) as the only line on stdout.
#           Idempotent; fast when already running.
#   url     print the connection URL; no side effects.
#   stop    stop the private cluster (fast shutdown). The data is kept.
#   status  print the cluster state; exit 0 running, 3 stopped, 4 no cluster.
#
# Environment:
#   DATABASE_URL     if set, `start` and `url` just print it: nothing is
#                    installed or started. `stop`/`status` still act on the
#                    private cluster.
#   STRATA_DATA_DIR  base directory for local state (default: <repo>/.data);
#                    the cluster lives in $STRATA_DATA_DIR/postgres.
#   STRATA_PG_PORT   TCP port on 127.0.0.1 (default: 54329).
#   STRATA_PG_BINDIR directory with initdb/pg_ctl/postgres (default: found via
#                    pg_config --bindir, else the newest /usr/lib/postgresql/*/bin).
#
# When run as root (CI, fresh Debian machines) missing server binaries are
# installed with apt-get, and the cluster runs as the `postgres` system user
# (or a `strata` system user created on demand), since PostgreSQL refuses to
# run as root. The Debian package's own cluster/service is left alone.
#
# Everything except the URL (and `status` output) goes to stderr.
set -euo pipefail

# fd 3 is the real stdout; everything else goes to stderr so that
# `DATABASE_URL="$(deploy/postgres.sh start)"` captures exactly the URL.
exec 3>&1 1>&2

readonly PROG="deploy/postgres.sh"
readonly DB_NAME="strata"
readonly DB_USER="strata"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# Sets REPO_ROOT and DATA_BASE (the base directory for local state).
# shellcheck source=deploy/lib.sh
source "$SCRIPT_DIR/lib.sh"
readonly PGDATA_DIR="$DATA_BASE/postgres"
readonly SOCKET_DIR="$PGDATA_DIR/socket"
readonly LOG_DIR="$PGDATA_DIR/log"
readonly STARTUP_LOG="$LOG_DIR/startup.log"
readonly PORT="${STRATA_PG_PORT:-54329}"

# url_encode percent-encodes a URL query value, byte by byte.
url_encode() {
	local LC_ALL=C s=$1 out="" c i
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		case $c in
		[A-Za-z0-9/._~-]) out+=$c ;;
		*)
			printf -v c '%%%02X' "'$c"
			out+=$c
			;;
		esac
	done
	printf '%s' "$out"
}

# socket_url is the URL of the cluster on port $1 over its Unix socket. Clients on this machine use
# it rather than 127.0.0.1: a round trip over loopback TCP costs more CPU, about 4% of what a command
# costs strata dev at 1,000 commands/s. The server still listens on 127.0.0.1 for other tools.
socket_url() {
	printf 'postgres://%s@/%s?host=%s&port=%s&sslmode=disable' "$DB_USER" "$DB_NAME" "$(url_encode "$SOCKET_DIR")" "$1"
}
URL="$(socket_url "$PORT")"
readonly URL

# The script talks to its own cluster with explicit flags only; make sure the
# caller's libpq/pg_ctl environment cannot redirect or alter those calls.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGOPTIONS PGSERVICE \
	PGSERVICEFILE PGPASSWORD PGPASSFILE PGSSLMODE PGTARGETSESSIONATTRS \
	PGCONNECT_TIMEOUT PGDATA PGAPPNAME PGCLIENTENCODING PGCTLTIMEOUT

BINDIR=""
PG_USER=""

usage() {
	cat >&2 <<EOF
usage: $PROG [start|url|stop|status|help]
  start   ensure the private PostgreSQL is running; print its URL (default)
  url     print the URL without side effects
  stop    stop the private PostgreSQL (data is kept)
  status  show whether it is running (exit 0 running, 3 stopped, 4 no cluster)
env: DATABASE_URL, STRATA_DATA_DIR (default <repo>/.data), STRATA_PG_PORT (default 54329), STRATA_PG_BINDIR
EOF
}

# ---------------------------------------------------------------------------
# Server binaries

has_server_bins() {
	local d="$1"
	[[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]]
}

find_bindir() {
	local d
	if [[ -n ${STRATA_PG_BINDIR:-} ]]; then
		has_server_bins "$STRATA_PG_BINDIR" ||
			die "STRATA_PG_BINDIR=$STRATA_PG_BINDIR does not contain initdb, pg_ctl and postgres"
		BINDIR="$STRATA_PG_BINDIR"
		return 0
	fi
	if command -v pg_config >/dev/null 2>&1; then
		d="$(pg_config --bindir 2>/dev/null || true)"
		if has_server_bins "$d"; then
			BINDIR="$d"
			return 0
		fi
	fi
	d="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1 || true)"
	if has_server_bins "$d"; then
		BINDIR="$d"
		return 0
	fi
	return 1
}

ensure_bindir() {
	if find_bindir; then
		return 0
	fi
	if ((IS_ROOT == 0)); then
		die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found.
  Install them, e.g. on Debian/Ubuntu:  sudo apt-get install postgresql postgresql-contrib
  (run this script as root to have it do that), or point the tests at an
  existing server with DATABASE_URL=postgres://user@host:port/db?sslmode=disable"
	fi
	# The Debian package may create and start its own "main" cluster (port
	# 5432); we do not use it and leave it alone.
	command -v apt-get >/dev/null 2>&1 ||
		die "PostgreSQL is needed but apt-get is not available; install PostgreSQL server binaries yourself (or set DATABASE_URL / STRATA_PG_BINDIR)"
	apt_install postgresql postgresql-contrib
	find_bindir || die "installed postgresql but still cannot find initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin"
}

server_major() {
	# "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)" -> 15
	local v
	v="$("$BINDIR/postgres" --version 2>/dev/null | awk '{print $3}')"
	printf '%s\n' "${v%%.*}"
}

# The cluster must be served by the major version that created it.
match_cluster_version() {
	[[ -f $PGDATA_DIR/PG_VERSION ]] || return 0
	local want have
	want="$(<"$PGDATA_DIR/PG_VERSION")"
	have="$(server_major)"
	[[ $want == "$have" ]] && return 0
	if has_server_bins "/usr/lib/postgresql/$want/bin"; then
		BINDIR="/usr/lib/postgresql/$want/bin"
		return 0
	fi
	die "the cluster in $PGDATA_DIR was created by PostgreSQL $want, but only PostgreSQL $have is available ($BINDIR).
  Install postgresql-$want, or remove $PGDATA_DIR (this deletes the local dev data) to re-create it."
}

ensure_contrib() {
	# pg_trgm (contrib) is needed by the schema; it ships with the server
	# package on Debian >= 10, but check anyway.
	local sharedir
	[[ -x $BINDIR/pg_config ]] || return 0
	sharedir="$("$BINDIR/pg_config" --sharedir 2>/dev/null || true)"
	[[ -n $sharedir ]] || return 0
	[[ -f $sharedir/extension/pg_trgm.control ]] && return 0
	if ((IS_ROOT == 1)) && command -v apt-get >/dev/null 2>&1; then
		apt_install postgresql-contrib
		[[ -f $sharedir/extension/pg_trgm.control ]] && return 0
	fi
	log "warning: the pg_trgm extension is not installed ($sharedir/extension/pg_trgm.control missing); install postgresql-contrib"
}

# ---------------------------------------------------------------------------
# The unprivileged user that owns and runs the cluster

pick_pg_user() {
	if ((IS_ROOT == 0)); then
		PG_USER="$(id -un)"
		check_own_dir "$PGDATA_DIR"
		return 0
	fi
	# Root: keep using whoever owns an existing cluster.
	if [[ -f $PGDATA_DIR/PG_VERSION ]]; then
		PG_USER="$(stat -c %U "$PGDATA_DIR")"
		if [[ $PG_USER == root || $PG_USER == UNKNOWN ]]; then
			die "$PGDATA_DIR is owned by '$PG_USER'; PostgreSQL cannot run as root. Remove it (deletes local dev data) or chown it to the postgres user."
		fi
		return 0
	fi
	if id -u postgres >/dev/null 2>&1; then
		PG_USER=postgres
	else
		ensure_system_user strata PostgreSQL "strata dev PostgreSQL"
		PG_USER=strata
	fi
}

# Run a command as the cluster owner (see run_as).
run_pg() { run_as "$PG_USER" "$@"; }

# ---------------------------------------------------------------------------
# Directories

prepare_dirs() {
	prepare_data_base "$PG_USER" PostgreSQL "$PGDATA_DIR"
	if ((IS_ROOT == 0)); then
		return 0
	fi
	if [[ ! -d $PGDATA_DIR ]]; then
		mkdir "$PGDATA_DIR"
	fi
	chown "$PG_USER:" "$PGDATA_DIR"
	chmod 0700 "$PGDATA_DIR"
}

check_socket_path() {
	local sock="$SOCKET_DIR/.s.PGSQL.$PORT"
	if ((${#sock} > 100)); then
		die "unix socket path $sock is too long (${#sock} bytes, max ~100); use a shorter STRATA_DATA_DIR, e.g. STRATA_DATA_DIR=/var/tmp/strata"
	fi
}

# ---------------------------------------------------------------------------
# Cluster state

proc_exists() { # pid: exists in any state (as PostgreSQL's own kill(pid, 0) check sees it)
	[[ -d /proc/$1 ]] || kill -0 "$1" 2>/dev/null
}

pgdata_real() {
	(cd "$PGDATA_DIR" 2>/dev/null && pwd -P) || true
}

# Is pid a live postmaster (or backend) of our cluster? PostgreSQL processes
# chdir() into the data directory, which tells them from an unrelated process
# that reused the PID after a reboot. Zombies (a killed postmaster whose
# parent has not reaped it, common in containers) do not count.
is_our_postmaster() { # pid
	local pid="$1" cwd
	proc_exists "$pid" || return 1
	[[ -d /proc/$pid ]] || return 0 # no procfs: trust kill -0
	! proc_zombie "$pid" || return 1
	cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
	if [[ -n $cwd ]]; then
		[[ $cwd == "$(pgdata_real)" ]]
	else
		[[ $(cat "/proc/$pid/comm" 2>/dev/null || true) == postgres* ]]
	fi
}

# PID from postmaster.pid if that process is our running postmaster, else fail.
postmaster_pid() { pid_from_file "$PGDATA_DIR/postmaster.pid" is_our_postmaster; }

pidfile_field() { # line number (4 = port, 5 = socket dir)
	sed -n "${1}p" "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true
}

# Live (non-zombie) processes whose working directory is our data directory.
cluster_procs() {
	local real p cwd
	real="$(pgdata_real)"
	[[ -n $real ]] || return 0
	for p in /proc/[0-9]*; do
		cwd="$(readlink "$p/cwd" 2>/dev/null || true)"
		[[ $cwd == "$real" ]] || continue
		proc_zombie "${p#/proc/}" && continue
		printf '%s ' "${p#/proc/}"
	done
}

# Called only when our postmaster is not running. PostgreSQL itself copes with
# a postmaster.pid or socket lock file whose PID is gone (and then checks for
# orphaned backends); it refuses to start when that PID now belongs to some
# other process (PID reuse after a reboot) or to a zombie. Only those lock
# files are removed here, and only if no process still runs in the data dir.
remove_stale_locks() {
	local f pid procs
	for f in "$PGDATA_DIR/postmaster.pid" "$SOCKET_DIR"/.s.PGSQL.*.lock; do
		[[ -f $f ]] || continue
		pid="$(head -n 1 "$f" 2>/dev/null || true)"
		[[ $pid =~ ^[0-9]+$ ]] || continue
		proc_exists "$pid" || continue
		is_our_postmaster "$pid" && continue
		procs="$(cluster_procs)"
		if [[ -n $procs ]]; then
			die "stale $f (PID $pid is not our postmaster), but processes ${procs% } still run in $PGDATA_DIR; wait for them to exit (or kill them) and retry"
		fi
		log "removing stale $f (PID $pid is not a running postmaster of this cluster)"
		rm -f "$f"
		if [[ $f == *.lock ]]; then
			rm -f "${f%.lock}"
		fi
	done
}

pg_ready() { # port
	run_pg "$BINDIR/pg_isready" -q -h "$SOCKET_DIR" -p "$1" -U "$DB_USER" -d postgres -t 2 >/dev/null 2>&1
}

wait_ready() { # port seconds
	local i
	for ((i = 0; i < $2 * 4; i++)); do
		pg_ready "$1" && return 0
		sleep 0.25
	done
	return 1
}

show_logs() { show_log_tails 25 "$STARTUP_LOG" "$LOG_DIR"/postgresql-*.log; }

sql_quote() { # '...' with embedded quotes doubled
	printf "'%s'" "${1//\'/\'\'}"
}

write_config() {
	local conf="$PGDATA_DIR/strata.conf" content
	content="# Rewritten by $PROG whenever it starts the server; local edits are lost.
# Use ALTER SYSTEM (postgresql.auto.conf) for your own overrides.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = $(sql_quote "$SOCKET_DIR")
max_connections = 200
shared_buffers = 256MB
# Durable on purpose: benchmarks must measure real commits.
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql-%a.log'
log_truncate_on_rotation = on
log_rotation_age = 1d
log_rotation_size = 0
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'"
	if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$content" ]]; then
		printf '%s\n' "$content" | run_pg tee "$conf" >/dev/null
	fi
	if ! grep -q "^include_if_exists = 'strata.conf'" "$PGDATA_DIR/postgresql.conf"; then
		printf "\n# strata: settings managed by %s\ninclude_if_exists = 'strata.conf'\n" "$PROG" |
			run_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
	fi
}

init_cluster() {
	[[ -f $PGDATA_DIR/PG_VERSION ]] && return 0
	if [[ -n "$(ls -A "$PGDATA_DIR" 2>/dev/null)" ]]; then
		die "$PGDATA_DIR exists and is not empty but is not a PostgreSQL cluster (no PG_VERSION); move it away or remove it"
	fi
	local -a locale_args=(--locale=C)
	# Byte-order collation (C) for speed and determinism, but a Unicode-aware
	# character classification when available (pg_trgm, upper/lower).
	if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
		locale_args+=(--lc-ctype=C.UTF-8)
	fi
	log "initialising cluster in $PGDATA_DIR (PostgreSQL $(server_major), running as '$PG_USER')"
	run_pg "$BINDIR/initdb" -D "$PGDATA_DIR" --auth=trust --username="$DB_USER" \
		--encoding=UTF8 "${locale_args[@]}" --no-instructions >&2 ||
		die "initdb failed"
}

free_port_or_die() {
	port_in_use "$PORT" || return 0
	# The Debian package's cluster might have been configured on our port.
	if command -v pg_lsclusters >/dev/null 2>&1; then
		local ver name cport status
		while read -r ver name cport status _; do
			if [[ $cport == "$PORT" && $status == online* ]]; then
				if ((IS_ROOT == 1)); then
					log "stopping the packaged cluster $ver/$name, which listens on our port $PORT (it is not deleted)"
					pg_ctlcluster "$ver" "$name" stop >&2 3>&- 9>&- || true
					sleep 0.5
					port_in_use "$PORT" || return 0
				fi
				die "port $PORT is used by the packaged PostgreSQL cluster $ver/$name; stop it (pg_ctlcluster $ver $name stop) or set STRATA_PG_PORT to a free port"
			fi
		done < <(pg_lsclusters -h 2>/dev/null || true)
	fi
	die_port_in_use "$PORT" "Set STRATA_PG_PORT to a free port (e.g. STRATA_PG_PORT=54330), or stop that process."
}

start_cluster() {
	run_pg mkdir -p "$SOCKET_DIR" "$LOG_DIR"
	run_pg chmod 0700 "$SOCKET_DIR"
	log "starting PostgreSQL on 127.0.0.1:$PORT (data: $PGDATA_DIR)"
	if ! run_pg "$BINDIR/pg_ctl" start -D "$PGDATA_DIR" -w -t 60 -s -l "$STARTUP_LOG" >&2; then
		show_logs
		die "pg_ctl start failed (see the logs above, $STARTUP_LOG and $LOG_DIR/)"
	fi
	if ! wait_ready "$PORT" 30; then
		show_logs
		die "PostgreSQL started but is not accepting connections on $SOCKET_DIR port $PORT"
	fi
}

ensure_database() { # port
	local exists
	exists="$(run_pg "$BINDIR/psql" -X -q -At -h "$SOCKET_DIR" -p "$1" -U "$DB_USER" -d postgres \
		-c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ||
		die "cannot query the cluster on port $1 as role $DB_USER"
	if [[ $exists != 1 ]]; then
		log "creating database $DB_NAME owned by $DB_USER"
		run_pg "$BINDIR/psql" -X -q -h "$SOCKET_DIR" -p "$1" -U "$DB_USER" -d postgres \
			-v ON_ERROR_STOP=1 -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >&2 ||
			die "cannot create database $DB_NAME"
	fi
}

# ---------------------------------------------------------------------------
# Commands

cmd_url() {
	print_url_override "${DATABASE_URL:-}" && return 0
	validate_port "$PORT" STRATA_PG_PORT
	printf '%s\n' "$URL" >&3
}

cmd_start() {
	print_url_override "${DATABASE_URL:-}" && return 0
	validate_port "$PORT" STRATA_PG_PORT
	check_socket_path
	make_public_dir "$DATA_BASE"
	lock "$DATA_BASE/.postgres.lock"

	# Fast path: already running.
	local pid running_port
	if [[ -f $PGDATA_DIR/PG_VERSION ]] && pid="$(postmaster_pid)" && find_bindir; then
		pick_pg_user
		match_cluster_version
		running_port="$(pidfile_field 4)"
		if [[ $running_port != "$PORT" ]]; then
			die "the cluster in $PGDATA_DIR is running on port $running_port, but STRATA_PG_PORT=$PORT; run '$PROG stop' first (or set STRATA_PG_PORT=$running_port)"
		fi
		if ! wait_ready "$PORT" 60; then
			show_logs
			die "PostgreSQL (pid $pid) is running but not accepting connections on port $PORT"
		fi
		ensure_database "$PORT"
		printf '%s\n' "$URL" >&3
		return 0
	fi

	ensure_bindir
	pick_pg_user
	match_cluster_version
	ensure_contrib
	prepare_dirs
	init_cluster
	write_config
	if ! postmaster_pid >/dev/null; then
		remove_stale_locks
		free_port_or_die
		start_cluster
	elif ! wait_ready "$PORT" 60; then
		show_logs
		die "PostgreSQL is running but not accepting connections on port $PORT"
	fi
	ensure_database "$PORT"
	printf '%s\n' "$URL" >&3
}

cmd_stop() {
	if [[ ! -f $PGDATA_DIR/PG_VERSION ]]; then
		log "no cluster in $PGDATA_DIR; nothing to stop"
		return 0
	fi
	lock "$DATA_BASE/.postgres.lock"
	local pid
	if ! pid="$(postmaster_pid)"; then
		log "not running ($PGDATA_DIR)"
		return 0
	fi
	find_bindir || die "PostgreSQL binaries not found; cannot run pg_ctl stop (postmaster pid $pid)"
	pick_pg_user
	match_cluster_version
	log "stopping PostgreSQL (pid $pid, data: $PGDATA_DIR)"
	run_pg "$BINDIR/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 60 -s >&2 ||
		die "pg_ctl stop failed"
	log "stopped"
}

cmd_status() {
	if [[ -n ${DATABASE_URL:-} ]]; then
		log "note: DATABASE_URL is set, so 'start' and 'url' use it instead of this cluster"
	fi
	if [[ ! -f $PGDATA_DIR/PG_VERSION ]]; then
		printf 'no cluster: %s does not exist\n' "$PGDATA_DIR" >&3
		return 4
	fi
	local pid port
	if ! pid="$(postmaster_pid)"; then
		printf 'stopped: data %s\n' "$PGDATA_DIR" >&3
		return 3
	fi
	port="$(pidfile_field 4)"
	local state="running"
	if find_bindir; then
		pick_pg_user
		if ! pg_ready "$port"; then
			state="running (not accepting connections yet)"
		fi
	fi
	printf '%s: pid %s, port %s, data %s\n' "$state" "$pid" "$port" "$PGDATA_DIR" >&3
	printf 'url: %s\n' "$(socket_url "$port")" >&3
}

main "$@"
