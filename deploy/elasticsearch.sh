#!/usr/bin/env bash
# deploy/elasticsearch.sh - a private, loopback-only Elasticsearch 8.x for
# development and tests.
#
# Usage: deploy/elasticsearch.sh [start|url|stop|status|help]
#
#   start   (default) make sure the private Elasticsearch is fetched and
#           running and that the cluster health is at least yellow, then print
#           its URL as the only line on stdout. Idempotent; fast when already
#           running.
#   url     print the URL; no side effects.
#   stop    stop the private Elasticsearch (SIGTERM). The data is kept.
#   status  print the node state; exit 0 running, 3 stopped, 4 not installed.
#
# Environment:
#   ELASTICSEARCH_URL          if set, `start` and `url` just print it: nothing
#                              is fetched or started. `stop`/`status` still act
#                              on the private node.
#   STRATA_DATA_DIR            base directory for local state (default:
#                              <repo>/.data); everything lives in
#                              $STRATA_DATA_DIR/elasticsearch.
#   STRATA_ES_VERSION          Elasticsearch version (default: see ES_VERSION).
#   STRATA_ES_PORT             HTTP port on 127.0.0.1 (default: 59200).
#   STRATA_ES_TRANSPORT_PORT   transport port on 127.0.0.1 (default: 59300).
#   STRATA_ES_HEAP             JVM heap, -Xms = -Xmx (default: 512m).
#   STRATA_ES_JAVA_HOME        JDK/JRE to run it with (default: $JAVA_HOME,
#                              else the `java` on PATH). Java >= 17.
#   STRATA_ES_START_TIMEOUT    seconds to wait for health >= yellow (default 120).
#
# The distribution is the minimal "integ-test-zip" that Elastic publishes to
# Maven Central (org.elasticsearch.distribution.integ-test-zip:elasticsearch,
# core modules only, no bundled JDK). It is fetched once with Maven and kept,
# with its unpacked tree, in $STRATA_DATA_DIR/elasticsearch/dist.
#
# When run as root (CI, fresh Debian machines) missing tools (Java, Maven,
# unzip, curl) are installed with apt-get, and Elasticsearch runs as the
# `strata` system user (created on demand), since it refuses to run as root.
#
# Everything except the URL (and `status` output) goes to stderr.
set -euo pipefail

# fd 3 is the real stdout; everything else goes to stderr so that
# `ELASTICSEARCH_URL="$(deploy/elasticsearch.sh start)"` captures exactly the URL.
exec 3>&1 1>&2

readonly PROG="deploy/elasticsearch.sh"
# Newest 8.x of the integ-test-zip on Maven Central when this was written.
readonly DEFAULT_ES_VERSION="8.19.21"
readonly ES_GROUP="org.elasticsearch.distribution.integ-test-zip"
readonly CLUSTER_NAME="strata-dev"
readonly ES_RUN_USER="strata"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# Sets REPO_ROOT and DATA_BASE (the base directory for local state).
# shellcheck source=deploy/lib.sh
source "$SCRIPT_DIR/lib.sh"

readonly ES_VERSION="${STRATA_ES_VERSION:-$DEFAULT_ES_VERSION}"
readonly PORT="${STRATA_ES_PORT:-59200}"
readonly TRANSPORT_PORT="${STRATA_ES_TRANSPORT_PORT:-59300}"
readonly HEAP="${STRATA_ES_HEAP:-512m}"
readonly START_TIMEOUT="${STRATA_ES_START_TIMEOUT:-120}"
readonly STOP_TIMEOUT=60
readonly URL="http://127.0.0.1:${PORT}"

readonly ES_DIR="$DATA_BASE/elasticsearch"
readonly DIST_DIR="$ES_DIR/dist"
readonly ZIP_FILE="$DIST_DIR/elasticsearch-$ES_VERSION.zip"
readonly ES_HOME="$DIST_DIR/elasticsearch-$ES_VERSION"
readonly CONF_DIR="$ES_DIR/config"
readonly NODE_DATA_DIR="$ES_DIR/data"
readonly LOG_DIR="$ES_DIR/logs"
readonly TMP_DIR="$ES_DIR/tmp"
readonly RUN_DIR="$ES_DIR/run"
readonly PID_FILE="$RUN_DIR/elasticsearch.pid"
readonly STARTUP_LOG="$LOG_DIR/startup.log"
readonly SERVER_LOG="$LOG_DIR/$CLUSTER_NAME.log"
# Marks a completely unpacked distribution.
readonly DIST_OK=".strata-unpacked"

ES_USER=""
JAVA_DIR=""

usage() {
	cat >&2 <<EOF
usage: $PROG [start|url|stop|status|help]
  start   ensure the private Elasticsearch is running; print its URL (default)
  url     print the URL without side effects
  stop    stop the private Elasticsearch (data is kept)
  status  show whether it is running (exit 0 running, 3 stopped, 4 not installed)
env: ELASTICSEARCH_URL, STRATA_DATA_DIR (default <repo>/.data), STRATA_ES_VERSION (default $DEFAULT_ES_VERSION),
     STRATA_ES_PORT (default 59200), STRATA_ES_TRANSPORT_PORT (default 59300), STRATA_ES_HEAP (default 512m),
     STRATA_ES_JAVA_HOME, STRATA_ES_START_TIMEOUT (default 120)
EOF
}

validate_settings() {
	validate_port "$PORT" STRATA_ES_PORT
	validate_port "$TRANSPORT_PORT" STRATA_ES_TRANSPORT_PORT
	((10#$PORT != 10#$TRANSPORT_PORT)) ||
		die "STRATA_ES_PORT and STRATA_ES_TRANSPORT_PORT must differ (both $PORT)"
	[[ $HEAP =~ ^[1-9][0-9]*[kKmMgG]$ ]] ||
		die "STRATA_ES_HEAP='$HEAP' is not a heap size like 512m or 1g"
	[[ $START_TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
		die "STRATA_ES_START_TIMEOUT='$START_TIMEOUT' is not a number of seconds"
	[[ $ES_VERSION =~ ^8\.[0-9]+\.[0-9]+$ ]] ||
		die "STRATA_ES_VERSION='$ES_VERSION' is not an Elasticsearch 8.x version (like $DEFAULT_ES_VERSION)"
}

# ---------------------------------------------------------------------------
# Tools

need_tool() { # command debian-package
	command -v "$1" >/dev/null 2>&1 && return 0
	if ((IS_ROOT == 1)) && apt_install "$2" && command -v "$1" >/dev/null 2>&1; then
		return 0
	fi
	die "'$1' is needed but not installed (Debian/Ubuntu: apt-get install $2)"
}

java_major() { # java binary -> major version, e.g. 17
	local v
	v="$("$1" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | head -n 1)"
	v="${v#1.}"
	printf '%s\n' "${v%%.*}"
}

find_java() {
	local j
	if [[ -n ${STRATA_ES_JAVA_HOME:-} ]]; then
		[[ -x $STRATA_ES_JAVA_HOME/bin/java ]] ||
			die "STRATA_ES_JAVA_HOME=$STRATA_ES_JAVA_HOME has no bin/java"
		JAVA_DIR="$STRATA_ES_JAVA_HOME"
		return 0
	fi
	if [[ -n ${JAVA_HOME:-} && -x ${JAVA_HOME:-}/bin/java ]]; then
		JAVA_DIR="$JAVA_HOME"
		return 0
	fi
	j="$(command -v java 2>/dev/null || true)"
	[[ -n $j ]] || return 1
	j="$(readlink -f "$j")"
	JAVA_DIR="$(dirname "$(dirname "$j")")"
	[[ -x $JAVA_DIR/bin/java ]]
}

ensure_java() {
	if ! find_java; then
		if ((IS_ROOT == 1)) && apt_install default-jre-headless && find_java; then
			:
		else
			die "Java (17 or newer) is needed to run Elasticsearch but was not found.
  Install it (Debian/Ubuntu: apt-get install default-jre-headless), or set STRATA_ES_JAVA_HOME
  (or point the tests at an existing node with ELASTICSEARCH_URL=http://host:port)"
		fi
	fi
	local major
	major="$(java_major "$JAVA_DIR/bin/java")"
	[[ $major =~ ^[0-9]+$ ]] || die "cannot tell the version of $JAVA_DIR/bin/java"
	((major >= 17)) ||
		die "Elasticsearch $ES_VERSION needs Java 17 or newer; $JAVA_DIR/bin/java is Java $major (set STRATA_ES_JAVA_HOME)"
}

# ---------------------------------------------------------------------------
# The distribution

dist_ready() {
	[[ -f $ES_HOME/$DIST_OK && -x $ES_HOME/bin/elasticsearch ]]
}

fetch_zip() {
	[[ -s $ZIP_FILE ]] && return 0
	need_tool mvn maven
	local tmp
	tmp="$(mktemp -d "$DIST_DIR/.fetch.XXXXXX")"
	log "fetching Elasticsearch $ES_VERSION ($ES_GROUP:elasticsearch:zip) with Maven"
	# Run from an empty directory so that no pom.xml around can interfere.
	# Maven caches what it fetches in ~/.m2; a user without a writable home
	# (a system user) gets a throw-away local repository instead.
	local -a repo_opt=()
	if [[ ! -d ${HOME:-} || ! -w ${HOME:-} ]]; then
		repo_opt=("-Dmaven.repo.local=$tmp/m2")
	fi
	# Maven's output is only shown when it fails (-q still prints colour codes).
	if ! (cd "$tmp" && mvn -B -q -ntp -Dstyle.color=never "${repo_opt[@]}" dependency:copy \
		"-Dartifact=$ES_GROUP:elasticsearch:$ES_VERSION:zip" \
		"-DoutputDirectory=$tmp" >"$tmp/mvn.log" 2>&1 </dev/null 3>&- 9>&-); then
		cat "$tmp/mvn.log" >&2 || true
		rm -rf "$tmp"
		die "Maven could not fetch $ES_GROUP:elasticsearch:$ES_VERSION:zip (is the version right? is Maven Central reachable?)"
	fi
	[[ -s $tmp/elasticsearch-$ES_VERSION.zip ]] || {
		rm -rf "$tmp"
		die "Maven succeeded but elasticsearch-$ES_VERSION.zip is not in $tmp"
	}
	mv -f "$tmp/elasticsearch-$ES_VERSION.zip" "$ZIP_FILE"
	rm -rf "$tmp"
}

ensure_dist() {
	dist_ready && return 0
	make_public_dir "$DIST_DIR"
	chmod 0755 "$DIST_DIR"
	fetch_zip
	need_tool unzip unzip
	local tmp
	tmp="$(mktemp -d "$DIST_DIR/.unpack.XXXXXX")"
	log "unpacking $ZIP_FILE"
	if ! (umask 022 && unzip -q "$ZIP_FILE" -d "$tmp") || [[ ! -x $tmp/elasticsearch-$ES_VERSION/bin/elasticsearch ]]; then
		rm -rf "$tmp"
		rm -f "$ZIP_FILE"
		die "cannot unpack $ZIP_FILE (removed it; run start again to refetch)"
	fi
	# The tree is only read by the server: make it readable by everyone (the
	# unprivileged user) even under a restrictive umask.
	chmod -R a+rX "$tmp/elasticsearch-$ES_VERSION"
	: >"$tmp/elasticsearch-$ES_VERSION/$DIST_OK"
	rm -rf "$ES_HOME"
	mv "$tmp/elasticsearch-$ES_VERSION" "$ES_HOME"
	rm -rf "$tmp"
}

# ---------------------------------------------------------------------------
# The unprivileged user that owns the node's state and runs it

pick_es_user() {
	if ((IS_ROOT == 0)); then
		ES_USER="$(id -un)"
		check_own_dir "$NODE_DATA_DIR"
		return 0
	fi
	# Root: keep using whoever owns existing node data.
	if [[ -d $NODE_DATA_DIR ]]; then
		ES_USER="$(stat -c %U "$NODE_DATA_DIR")"
		if [[ $ES_USER != root && $ES_USER != UNKNOWN ]]; then
			return 0
		fi
	fi
	ensure_system_user "$ES_RUN_USER" Elasticsearch "strata dev services"
	ES_USER="$ES_RUN_USER"
}

# Run a command as the node's user (see run_as).
run_es() { run_as "$ES_USER" "$@"; }

# ---------------------------------------------------------------------------
# Directories

prepare_dirs() {
	prepare_data_base "$ES_USER" Elasticsearch "$ES_DIR"
	make_public_dir "$ES_DIR"
	chmod 0755 "$ES_DIR"
	if ((IS_ROOT == 0)); then
		mkdir -p "$CONF_DIR" "$NODE_DATA_DIR" "$LOG_DIR" "$TMP_DIR" "$RUN_DIR"
		return 0
	fi

	if ! runuser -u "$ES_USER" -- test -x "$JAVA_DIR/bin/java"; then
		die "Elasticsearch runs as user '$ES_USER', which cannot execute $JAVA_DIR/bin/java; set STRATA_ES_JAVA_HOME to a JDK it can use"
	fi

	local d
	for d in "$CONF_DIR" "$NODE_DATA_DIR" "$LOG_DIR" "$TMP_DIR" "$RUN_DIR"; do
		[[ -d $d ]] || mkdir "$d"
		chown -R "$ES_USER:" "$d"
	done
	chmod 0700 "$NODE_DATA_DIR" "$TMP_DIR"
}

# ---------------------------------------------------------------------------
# Node state

logs_real() {
	(cd "$LOG_DIR" 2>/dev/null && pwd -P) || true
}

# Is pid a live Elasticsearch server of this state directory? The server JVM
# runs in path.logs (our logs directory) and from our dist directory, which
# tells it from an unrelated process that reused the PID after a reboot, or
# from another checkout's node. Zombies (a killed server whose parent has not
# reaped it, common in containers) do not count.
is_our_es() { # pid
	local pid="$1" cwd args
	[[ -d /proc/$pid ]] || return 1
	! proc_zombie "$pid" || return 1
	args="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null || true)"
	grep -qxF -- "org.elasticsearch.server/org.elasticsearch.bootstrap.Elasticsearch" <<<"$args" || return 1
	cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
	if [[ -n $cwd ]]; then
		[[ $cwd == "$(logs_real)" ]]
	else # another user's process: only its command line is visible
		grep -qF -- "-Des.path.home=$DIST_DIR/elasticsearch-" <<<"$args"
	fi
}

# PID from the pid file if that process is our running server, else fail.
es_pid() { pid_from_file "$PID_FILE" is_our_es; }

# Live server processes of this state directory, whatever the pid file says.
our_procs() {
	local p
	[[ -d $LOG_DIR ]] || return 0
	for p in /proc/[0-9]*; do
		is_our_es "${p#/proc/}" && printf '%s ' "${p#/proc/}"
	done
	return 0
}

# The setting a running node was started with (our generated config).
conf_value() { # key
	sed -n "s/^$1: *//p" "$CONF_DIR/elasticsearch.yml" 2>/dev/null | head -n 1
}

# Cluster health status (green/yellow/red) on port, or fail.
health() { # port [wait-seconds]
	local body status
	body="$(curl -sS --max-time "$((${2:-0} + 5))" \
		"http://127.0.0.1:$1/_cluster/health?wait_for_status=yellow&timeout=${2:-0}s" 2>/dev/null)" || return 1
	status="$(sed -n 's/.*"status":"\([a-z]*\)".*/\1/p' <<<"$body")"
	[[ -n $status ]] || return 1
	printf '%s\n' "$status"
}

healthy() { # port [wait-seconds]
	local s
	s="$(health "$@")" || return 1
	[[ $s == green || $s == yellow ]]
}

free_ports_or_die() {
	local p
	for p in "$PORT" "$TRANSPORT_PORT"; do
		port_in_use "$p" || continue
		die_port_in_use "$p" "Set STRATA_ES_PORT / STRATA_ES_TRANSPORT_PORT to free ports, or stop that process."
	done
}

show_logs() { show_log_tails 40 "$STARTUP_LOG" "$SERVER_LOG"; }

write_config() {
	# The distribution's own config (jvm.options, log4j2.properties, ...) for
	# this version, plus our settings. The keystore the server creates here is
	# kept.
	run_es cp -R "$ES_HOME/config/." "$CONF_DIR/"
	run_es tee "$CONF_DIR/elasticsearch.yml" >/dev/null <<EOF
# Rewritten by $PROG whenever it starts the node; local edits are lost.
cluster.name: $CLUSTER_NAME
node.name: $CLUSTER_NAME
path.data: $NODE_DATA_DIR
path.logs: $LOG_DIR
network.host: 127.0.0.1
http.port: $PORT
transport.port: $TRANSPORT_PORT
discovery.type: single-node
# Loopback-only development node: no TLS, no authentication.
xpack.security.enabled: false
# Tests must keep working on a full-ish disk: no watermarks, no read-only block.
cluster.routing.allocation.disk.threshold_enabled: false
# Let tests delete indices by wildcard (DELETE /strata-test-*).
action.destructive_requires_name: false
EOF
	run_es mkdir -p "$CONF_DIR/jvm.options.d"
	run_es tee "$CONF_DIR/jvm.options.d/strata.options" >/dev/null <<EOF
# Written by $PROG.
-Xms$HEAP
-Xmx$HEAP
EOF
}

start_node() {
	log "starting Elasticsearch $ES_VERSION on $URL (state: $ES_DIR, java: $JAVA_DIR, user: $ES_USER)"
	local started=$SECONDS deadline=$((SECONDS + START_TIMEOUT)) pid
	rm -f "$PID_FILE"
	# The launcher returns once the server process has started (-d); the
	# server itself keeps running, detached, with its stdio on the log.
	if ! run_es env -u JAVA_HOME -u ES_JAVA_OPTS -u JAVA_TOOL_OPTIONS -u _JAVA_OPTIONS -u JAVA_OPTS \
		ES_JAVA_HOME="$JAVA_DIR" ES_PATH_CONF="$CONF_DIR" ES_TMPDIR="$TMP_DIR" \
		"$ES_HOME/bin/elasticsearch" -d -p "$PID_FILE" >"$STARTUP_LOG" 2>&1 </dev/null; then
		show_logs
		die "Elasticsearch failed to start (see the logs above, $STARTUP_LOG and $LOG_DIR/)"
	fi
	# The launcher has returned after the node started, so the pid file is
	# there unless the server died right away.
	if ! pid="$(es_pid)"; then
		show_logs
		die "Elasticsearch exited right after starting, or wrote no pid file $PID_FILE (see the logs above and $LOG_DIR/)"
	fi
	while ((SECONDS < deadline)); do
		if ! is_our_es "$pid"; then
			show_logs
			die "Elasticsearch (pid $pid) exited during startup (see the logs above and $LOG_DIR/)"
		fi
		if healthy "$PORT" 1; then
			log "Elasticsearch is up (pid $pid, health: $(health "$PORT" || echo '?')) after $((SECONDS - started)) s"
			return 0
		fi
		sleep 0.5
	done
	show_logs
	die "Elasticsearch did not reach health yellow on $URL within $START_TIMEOUT s (pid $pid; it is left running: '$PROG stop' stops it)"
}

# ---------------------------------------------------------------------------
# Commands

cmd_url() {
	print_url_override "${ELASTICSEARCH_URL:-}" && return 0
	validate_port "$PORT" STRATA_ES_PORT
	printf '%s\n' "$URL" >&3
}

cmd_start() {
	print_url_override "${ELASTICSEARCH_URL:-}" && return 0
	validate_settings
	make_public_dir "$DATA_BASE"
	lock "$DATA_BASE/.elasticsearch.lock"

	# Fast path: already running.
	local pid running_port
	if pid="$(es_pid)"; then
		running_port="$(conf_value http.port)"
		if [[ $running_port != "$PORT" ]]; then
			die "the Elasticsearch in $ES_DIR is running on port ${running_port:-?}, but STRATA_ES_PORT=$PORT; run '$PROG stop' first (or set STRATA_ES_PORT=$running_port)"
		fi
		if ! healthy "$PORT" "$START_TIMEOUT"; then
			show_logs
			die "Elasticsearch (pid $pid) is running but its health on $URL is not yellow or green (status: $(health "$PORT" || echo unreachable))"
		fi
		printf '%s\n' "$URL" >&3
		return 0
	fi

	local procs
	procs="$(our_procs)"
	[[ -z $procs ]] ||
		die "Elasticsearch processes ${procs% } of $ES_DIR run, but the pid file $PID_FILE does not name them; stop them (kill ${procs% }) and retry"

	free_ports_or_die
	need_tool curl curl
	ensure_java
	pick_es_user
	ensure_dist
	prepare_dirs
	write_config
	start_node
	printf '%s\n' "$URL" >&3
}

cmd_stop() {
	if [[ ! -d $ES_DIR ]]; then
		log "no Elasticsearch in $ES_DIR; nothing to stop"
		return 0
	fi
	lock "$DATA_BASE/.elasticsearch.lock"
	local pid
	if ! pid="$(es_pid)"; then
		local procs
		procs="$(our_procs)"
		if [[ -z $procs ]]; then
			log "not running ($ES_DIR)"
			return 0
		fi
		pid="${procs%% *}"
	fi
	log "stopping Elasticsearch (pid $pid, state: $ES_DIR)"
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + STOP_TIMEOUT))
	while is_our_es "$pid"; do
		if ((SECONDS >= deadline)); then
			log "still running after $STOP_TIMEOUT s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 1
			is_our_es "$pid" && die "cannot stop Elasticsearch (pid $pid)"
			break
		fi
		sleep 0.25
	done
	rm -f "$PID_FILE"
	log "stopped"
}

cmd_status() {
	if [[ -n ${ELASTICSEARCH_URL:-} ]]; then
		log "note: ELASTICSEARCH_URL is set, so 'start' and 'url' use it instead of this node"
	fi
	if [[ ! -d $NODE_DATA_DIR ]]; then
		printf 'not installed: %s does not exist\n' "$NODE_DATA_DIR" >&3
		return 4
	fi
	local pid port status version
	if ! pid="$(es_pid)"; then
		printf 'stopped: state %s\n' "$ES_DIR" >&3
		return 3
	fi
	port="$(conf_value http.port)"
	version="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null |
		sed -n 's|^-Des.path.home=.*/elasticsearch-\([0-9.]*\)$|\1|p' | head -n 1)"
	status="$(health "${port:-$PORT}" 2>/dev/null || echo "not answering yet")"
	printf 'running: pid %s, version %s, port %s, health %s, state %s\n' \
		"$pid" "${version:-?}" "${port:-?}" "$status" "$ES_DIR" >&3
	printf 'url: http://127.0.0.1:%s\n' "${port:-$PORT}" >&3
}

main "$@"
