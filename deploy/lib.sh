# shellcheck shell=bash
# deploy/lib.sh - code shared by deploy/postgres.sh and deploy/elasticsearch.sh,
# sourced by both (it is not a command of its own).
#
# The sourcing script sets PROG (its name, for messages) before sourcing, and
# has already sent its real stdout to fd 3 and everything else to stderr; fd 9
# is taken by the lock (see lock). Sourcing sets REPO_ROOT, DATA_BASE and
# IS_ROOT, which both services share; what differs between them (user,
# directories, names) is passed to the functions as arguments.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
readonly REPO_ROOT

# Both services keep their state below one base directory: $STRATA_DATA_DIR
# (made absolute, without a trailing slash), else <repo>/.data.
DATA_BASE="${STRATA_DATA_DIR:-$REPO_ROOT/.data}"
if [[ $DATA_BASE != /* ]]; then
	DATA_BASE="$PWD/$DATA_BASE"
fi
DATA_BASE="${DATA_BASE%/}"
readonly DATA_BASE

IS_ROOT=0
if [[ $(id -u) -eq 0 ]]; then
	IS_ROOT=1
fi
readonly IS_ROOT

# apt-get update runs at most once per invocation.
APT_UPDATED=0

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

# Create a directory (and its parents) readable by everyone whatever the
# caller's umask, since the service may run as another user.
make_public_dir() { # dir
	(umask 022 && mkdir -p "$1") || die "cannot create $1"
}

validate_port() { # value variable-name
	if ! [[ $1 =~ ^[0-9]+$ ]] || ((10#$1 < 1 || 10#$1 > 65535)); then
		die "$2='$1' is not a valid TCP port"
	fi
}

# Hold an exclusive lock on file for the rest of the script, so that two runs
# (e.g. parallel `make` targets) do not start the same service twice. It is
# kept on fd 9, which every command that may leave a daemon behind closes.
lock() { # file
	exec 9>"$1"
	if ! flock -n 9; then
		log "waiting for another $PROG to finish"
		flock -w 300 9 || die "timed out waiting for $1"
	fi
}

# Install Debian packages (as root); fails if there is no apt-get. fds 3 and 9
# are closed so that a service a package's postinst starts cannot hold our
# stdout or the lock.
apt_install() { # package...
	command -v apt-get >/dev/null 2>&1 || return 1
	if ((APT_UPDATED == 0)); then
		log "running apt-get update"
		DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 </dev/null 3>&- 9>&-
		APT_UPDATED=1
	fi
	log "installing $*"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 </dev/null 3>&- 9>&-
}

# ---------------------------------------------------------------------------
# The unprivileged user that runs a service

# As a normal user the service runs as you, so its existing state must be
# yours: we could neither use nor fix someone else's.
check_own_dir() { # dir
	local me owner
	[[ -e $1 ]] || return 0
	me="$(id -un)"
	owner="$(stat -c %U "$1")"
	[[ $owner == "$me" ]] ||
		die "$1 is owned by '$owner', not by you ('$me'); run as root or as '$owner', or use another STRATA_DATA_DIR"
}

# Neither server runs as root, so as root we run them as a system user,
# created here on first use.
ensure_system_user() { # user service comment
	if ! id -u "$1" >/dev/null 2>&1; then
		log "creating system user '$1' to run $2"
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin --comment "$3" "$1"
	fi
}

# Run a command as user (as root; otherwise as ourselves), from / so that no
# working directory is kept busy. fds 3 (our stdout) and 9 (the lock) are
# closed so that a daemonised server cannot keep them open: otherwise a caller
# doing "$(deploy/...sh start)" would wait forever for EOF, and the lock would
# be held for as long as the server runs.
run_as() { # user command...
	local user="$1"
	shift
	if ((IS_ROOT == 1)); then
		(cd / && runuser -u "$user" -- "$@") 3>&- 9>&-
	else
		(cd / && "$@") 3>&- 9>&-
	fi
}

# Create DATA_BASE if needed and, as root, make sure user can reach the
# service's state (target-dir) below it. Directories we own under the repo
# (.data and its parents up to the repo root), or a DATA_BASE created just
# now, are made traversable; any other ancestor (e.g. a home directory) is
# only checked, never chmod'ed: that is not ours to change.
prepare_data_base() { # user service target-dir
	local user="$1" service="$2" target="$3"
	local created=0
	if [[ ! -d $DATA_BASE ]]; then
		make_public_dir "$DATA_BASE"
		created=1
	fi
	if ((IS_ROOT == 0)); then
		return 0
	fi

	local d="$DATA_BASE"
	if [[ $d == "$REPO_ROOT/"* ]]; then
		while [[ $d == "$REPO_ROOT/"* ]]; do
			chmod a+x "$d"
			d="$(dirname "$d")"
		done
	elif ((created == 1)); then
		chmod a+x "$d"
	fi

	local path="" part
	local -a parts
	IFS=/ read -r -a parts <<<"${DATA_BASE#/}"
	for part in "${parts[@]}"; do
		[[ -n $part ]] || continue
		path="$path/$part"
		if ! runuser -u "$user" -- test -x "$path" 2>/dev/null; then
			die "$service runs as user '$user', which cannot traverse $path (needed to reach $target).
  Put the data elsewhere, e.g.:  STRATA_DATA_DIR=/var/tmp/strata $PROG start
  (or grant search permission yourself: chmod o+x $path)"
		fi
	done
}

# ---------------------------------------------------------------------------
# Processes, ports and logs

# A zombie (a killed server whose parent has not reaped it, common in
# containers) still has a PID but is not a running server.
proc_zombie() { # pid
	local state
	state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
	[[ $state == Z || $state == X ]]
}

# The PID in the first line of pidfile if is-ours (a function taking a PID)
# says it is our running server, else fail. A PID file alone can be stale, or
# name a process that reused the PID after a reboot.
pid_from_file() { # pidfile is-ours
	local pid
	pid="$(head -n 1 "$1" 2>/dev/null || true)"
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	"$2" "$pid" || return 1
	printf '%s\n' "$pid"
}

port_in_use() { # port
	timeout 3 bash -c "exec 5<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Say who holds port (when ss can tell) and how to get around it.
die_port_in_use() { # port hint
	local who=""
	if command -v ss >/dev/null 2>&1; then
		who="$(ss -Hltnp "sport = :$1" 2>/dev/null | head -n 3 || true)"
	fi
	die "port $1 on 127.0.0.1 is already in use by another process${who:+:
$who}
  $2"
}

# The end of each existing log file, on stderr, to explain a failed start.
show_log_tails() { # lines file...
	local lines="$1" f
	shift
	for f in "$@"; do
		[[ -f $f ]] || continue
		log "---- last lines of $f ----"
		tail -n "$lines" "$f" >&2 || true
	done
}

# ---------------------------------------------------------------------------
# Commands

# `start` and `url` defer to a URL set in the environment (a service run
# elsewhere): print it as the only line on stdout and do nothing else.
print_url_override() { # url-from-env
	[[ -n $1 ]] || return 1
	printf '%s\n' "$1" >&3
}

# The command line both scripts take; the script defines usage and cmd_start,
# cmd_url, cmd_stop and cmd_status. A wrong command line exits 2.
main() {
	local cmd="${1:-start}"
	if (($# > 1)); then
		usage
		exit 2
	fi
	case "$cmd" in
	start) cmd_start ;;
	url) cmd_url ;;
	stop) cmd_stop ;;
	status) cmd_status ;;
	help | -h | --help) usage ;;
	*)
		usage
		exit 2
		;;
	esac
}
