# Shared by demo.sh and test.sh: install what is missing, build, install the
# extension, and run commands as an unprivileged user (PostgreSQL refuses root).

PG_MAJOR=15
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PACKAGES="postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libipc-run-perl make gcc libc6-dev"

# Run a command as root (directly, or through sudo)
as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Install the Debian packages that are missing
ensure_deps() {
	local missing=""
	for p in $PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	echo "installing:$missing"
	# a throwaway cluster is all we need: no main cluster, no service
	as_root mkdir -p /etc/postgresql-common
	[ -f /etc/postgresql-common/createcluster.conf ] ||
		echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Build with warnings as errors, and install into PostgreSQL's directories
build_install() {
	make -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
	make -s PG_CONFIG="$PG_CONFIG" PG_CFLAGS="-Wall -Wextra -Werror -Wno-unused-parameter"
	as_root make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# The unprivileged user that runs servers and tests
test_user() {
	if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi
}

# Run a command as the test user, with PostgreSQL's binaries first in PATH.
# The locale is C.UTF-8 (built into Debian's C library), so that clusters are
# UTF8 even on a machine with no locale set, where initdb would pick SQL_ASCII.
as_test_user() {
	local bindir
	bindir=$("$PG_CONFIG" --bindir)
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- env LC_ALL=C.UTF-8 PATH="$bindir:$PATH" "$@"
	else
		env LC_ALL=C.UTF-8 PATH="$bindir:$PATH" "$@"
	fi
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
