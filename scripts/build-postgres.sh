#!/usr/bin/env bash
#
# Build PostgreSQL from a source tarball into a cache directory outside the
# source tree, and print the path of the installed pg_config.  The cache is
# keyed by the tarball's checksum and the build flavour, so a second run reuses
# the build.
#
#   scripts/build-postgres.sh [assert|release]
#
# The source is Debian's source package postgresql-18 when apt-get source can
# fetch it, and otherwise the tarball named by PG_SOURCE_TARBALL (by default
# ../shared/vendor/postgresql-18.6.tar.bz2 beside the checkout), checked
# against the SHA256SUMS file next to it.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

flavour=${1:-assert}
case "$flavour" in
assert) flags="--enable-cassert --enable-debug" ;;
release) flags="" ;;
*) echo "usage: $0 [assert|release]" >&2; exit 2 ;;
esac

tarball=$(pg_source_tarball)
sum=$(sha256sum "$tarball" | cut -c1-16)
version=$(basename "$tarball" | sed -E 's/^postgresql-([0-9.]+)\.tar\.bz2$/\1/; s/^postgresql-[0-9]+_([0-9.]+)\.orig\.tar\.bz2$/\1/')
prefix="$(cache_dir)/postgresql-$version-$sum-$flavour"

if [ -x "$prefix/bin/pg_config" ] && [ -f "$prefix/.complete" ]; then
	echo "$prefix/bin/pg_config"
	exit 0
fi

# one build at a time: a second caller waits for the first and reuses it
exec 9>"$prefix.lock"
flock 9
if [ -x "$prefix/bin/pg_config" ] && [ -f "$prefix/.complete" ]; then
	echo "$prefix/bin/pg_config"
	exit 0
fi

ensure_packages bison flex libipc-run-perl make gcc libc6-dev perl >&2
work=$(mktemp -d /tmp/pgbuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "building PostgreSQL $version ($flavour) into $prefix" >&2
tar -xjf "$tarball" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
rm -rf "$prefix"
(
	cd "$src"
	# shellcheck disable=SC2086
	./configure --prefix="$prefix" --without-icu --without-readline \
		--without-zlib --enable-tap-tests $flags >"$work/configure.log" 2>&1 ||
		{ tail -n 30 "$work/configure.log"; exit 1; }
	make -j"$(nproc)" -s >"$work/make.log" 2>&1 ||
		{ tail -n 40 "$work/make.log"; exit 1; }
	make -s install >"$work/install.log" 2>&1 ||
		{ tail -n 40 "$work/install.log"; exit 1; }
	make -s -C src/test/isolation install >>"$work/install.log" 2>&1
	make -s -C src/test/perl install >>"$work/install.log" 2>&1
) >&2
touch "$prefix/.complete"
echo "$prefix/bin/pg_config"
