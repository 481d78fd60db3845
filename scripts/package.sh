#!/usr/bin/env bash
#
# Build the Debian package postgresql-15-idempotency from this checkout,
# install it, and run the demo against the installed package.  Installs the
# build tools that are missing (Debian 12).  The build runs in a copy of the
# checkout in a temporary directory, since dpkg-buildpackage writes the
# packages into the parent of the tree it builds.  Ends with one line saying
# what was built, and exits non-zero on any failure.  The package stays
# installed; remove it with "apt-get remove postgresql-15-idempotency".
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PG_MAJOR=15
pkg=postgresql-$PG_MAJOR-idempotency

# The build tools.  postgresql-server-dev-all is taken at the version of the
# installed postgresql-common when the registry still has it, so that
# building never upgrades the server's packages.
PG_CONFIG=$(pg_config_for "$PG_MAJOR")
ensure_packages debhelper dpkg-dev fakeroot build-essential "postgresql-server-dev-$PG_MAJOR"
if ! dpkg-query -W -f='${Status}' postgresql-server-dev-all 2>/dev/null | grep -q "ok installed"; then
	common=$(dpkg-query -W -f='${Version}' postgresql-common)
	if apt-cache madison postgresql-server-dev-all | awk -F' [|] ' '{print $2}' | grep -xF "$common" >/dev/null; then
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			"postgresql-server-dev-all=$common" >/dev/null
	else
		ensure_packages postgresql-server-dev-all
	fi
fi

tmp=$(mktemp -d /tmp/idempotency-package.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/idempotency"
tar -cf - --exclude=./.git . | tar -xf - -C "$tmp/idempotency"

echo "== building $pkg"
if ! (cd "$tmp/idempotency" && dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1; then
	tail -n 60 "$tmp/build.log"
	echo "package: dpkg-buildpackage failed" >&2
	exit 1
fi
debs=("$tmp/${pkg}_"*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || { echo "package: expected one ${pkg}_*.deb" >&2; exit 1; }
deb=${debs[0]}
version=$(dpkg-deb -f "$deb" Version)
dpkg-deb -c "$deb" | awk '{print "   " $6}' | grep -E '\.(so|control|sql)$'

echo "== installing $pkg $version"
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall --no-install-recommends \
	-o DPkg::Lock::Timeout=300 "$deb" >/dev/null
[ "$(dpkg-query -W -f='${Version}' "$pkg")" = "$version" ] ||
	{ echo "package: $pkg $version is not installed" >&2; exit 1; }
# the demo must run on the package's own files
libdir=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
files=$(dpkg -L "$pkg")
grep -xF "$libdir/idempotency.so" <<<"$files" >/dev/null &&
	grep -xF "$sharedir/extension/idempotency.control" <<<"$files" >/dev/null ||
	{ echo "package: $pkg does not ship idempotency.so and idempotency.control" >&2; exit 1; }

echo "== demo on the installed package"
IDEM_INSTALLED=1 PG_MAJOR=$PG_MAJOR bash scripts/demo.sh
changed=$(dpkg --verify "$pkg" || true)
[ -z "$changed" ] || { echo "$changed"; echo "package: files of $pkg changed during the demo" >&2; exit 1; }

echo "package: $pkg $version built, installed, demo passed"
