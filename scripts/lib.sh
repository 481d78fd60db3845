# Shared by the scripts: install what is missing, find or build each
# PostgreSQL major, build and install the extension into it, and run commands
# as an unprivileged user (PostgreSQL refuses to run as root).

# The majors that the tests run on: 15 from Debian's packages, 18 built from
# source with assertions.  PG_MAJORS limits a run (PG_MAJORS=15).
ALL_MAJORS="15 18"
PG18_VERSION=18.6

# Run a command as root (directly, or through sudo)
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the named Debian packages that are missing
ensure_packages() {
	local missing="" p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	echo "installing:$missing" >&2
	# a throwaway cluster is all we need: no main cluster, no service
	as_root mkdir -p /etc/postgresql-common
	[ -f /etc/postgresql-common/createcluster.conf ] ||
		echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
	if [ -z "${APT_UPDATED:-}" ]; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
		APT_UPDATED=1
	fi
	# shellcheck disable=SC2086
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Where builds from source are kept between runs, outside the checkout
cache_dir() {
	local dir
	if [ -n "${IDEM_CACHE:-}" ]; then
		dir=$IDEM_CACHE
	elif [ "$(id -u)" -eq 0 ]; then
		dir=/var/cache/idempotency
	else
		dir=${XDG_CACHE_HOME:-$HOME/.cache}/idempotency
	fi
	mkdir -p "$dir"
	echo "$dir"
}

# The PostgreSQL 18 source tarball: Debian's source package when the registry
# serves it at version PG18_VERSION (apt checks it against the archive's
# signed index), else the copy in ../shared/vendor checked against SHA256SUMS
pg_source_tarball() {
	local dl lists vendor
	dl="$(cache_dir)/src"
	mkdir -p "$dl"
	if [ -f "$dl/postgresql-18_$PG18_VERSION.orig.tar.bz2" ]; then
		echo "$dl/postgresql-18_$PG18_VERSION.orig.tar.bz2"
		return 0
	fi
	lists=$(mktemp -d)
	mkdir -p "$lists/parts" "$lists/state/partial"
	cat >"$lists/parts/src.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: forky
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	local apt_opts="-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts=$lists/parts -o Dir::State::Lists=$lists/state -o APT::Sandbox::User=root"
	# shellcheck disable=SC2086
	if (cd "$dl" && timeout 300 apt-get -qq $apt_opts update >/dev/null 2>&1 &&
		timeout 300 apt-get -qq $apt_opts source --download-only postgresql-18 >/dev/null 2>&1) &&
		[ -f "$dl/postgresql-18_$PG18_VERSION.orig.tar.bz2" ]; then
		rm -rf "$lists"
		echo "$dl/postgresql-18_$PG18_VERSION.orig.tar.bz2"
		return 0
	fi
	rm -rf "$lists"
	vendor=${PG_SOURCE_TARBALL:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/vendor/postgresql-$PG18_VERSION.tar.bz2}
	[ -f "$vendor" ] || { echo "no PostgreSQL $PG18_VERSION source: $vendor is missing" >&2; return 1; }
	(cd "$(dirname "$vendor")" && grep " $(basename "$vendor")\$" SHA256SUMS | sha256sum -c --quiet -) >&2 ||
		{ echo "checksum mismatch: $vendor" >&2; return 1; }
	echo "$vendor"
}

# The pg_config of a major, installing or building it first
pg_config_for() {
	case "$1" in
	15)
		ensure_packages postgresql-15 postgresql-server-dev-15 libipc-run-perl make gcc libc6-dev
		echo /usr/lib/postgresql/15/bin/pg_config
		;;
	18) bash "$(dirname "${BASH_SOURCE[0]}")/build-postgres.sh" "${PG18_FLAVOUR:-assert}" ;;
	*) echo "unsupported major: $1 (tested here: $ALL_MAJORS)" >&2; return 1 ;;
	esac
}

# Build with warnings as errors, and install into that PostgreSQL's directories
build_install() {
	local pgc=$1
	make -s PG_CONFIG="$pgc" clean >/dev/null
	make -s PG_CONFIG="$pgc" PG_CFLAGS="-Wall -Wextra -Werror -Wno-unused-parameter"
	as_root make -s PG_CONFIG="$pgc" install >/dev/null
	make -s PG_CONFIG="$pgc" clean >/dev/null
}

# The unprivileged user that runs servers and tests
test_user() {
	if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi
}

# Make sure the unprivileged user exists (Debian's postgresql packages create it)
ensure_test_user() {
	if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
		useradd --system --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres
	fi
}

# Run a command as the test user, with that PostgreSQL's binaries first in
# PATH.  The locale is C.UTF-8 (built into Debian's C library), so that
# clusters are UTF8 even on a machine with no locale set, where initdb would
# pick SQL_ASCII.
as_test_user() {
	local bindir
	bindir=$("$PG_CONFIG" --bindir)
	if [ "$(id -u)" -eq 0 ]; then
		# in the current directory if the test user may enter it (a checkout
		# in a directory of root's, mode 0700, it may not), else in /: the
		# PostgreSQL programs complain on stderr about a directory they
		# cannot return to, which the suites that compare output then see
		runuser -u postgres -- sh -c 'cd "$1" 2>/dev/null || cd /; shift; exec "$@"' \
			as_test_user "$PWD" env LC_ALL=C.UTF-8 PATH="$bindir:$PATH" "$@"
	else
		env LC_ALL=C.UTF-8 PATH="$bindir:$PATH" "$@"
	fi
}

# Start a throwaway cluster in DIR/data, reached only on a unix socket in DIR,
# with the extension preloaded; further settings may follow as arguments
start_cluster() {
	local dir=$1 port=$2 setting
	shift 2
	as_test_user initdb -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
	{
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "shared_preload_libraries = 'idempotency'"
		for setting in "$@"; do echo "$setting"; done
	} >>"$dir/data/postgresql.conf"
	as_test_user pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

# A copy of the source tree that the test user may write to (when run as root)
writable_tree() {
	if [ "$(id -u)" -eq 0 ]; then
		local dir
		dir=$(mktemp -d /tmp/idempotency.XXXXXX)
		cp -a . "$dir/src-tree"
		chown -R postgres "$dir"
		echo "$dir/src-tree"
	else
		pwd
	fi
}
