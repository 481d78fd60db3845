#!/usr/bin/env bash
#
# Build Citus for the PostgreSQL of a pg_config, keep the built files in the
# cache directory outside the source tree, and install them into that
# PostgreSQL.  Prints the cache directory of the build.
#
#   scripts/build-citus.sh [--build-only] PG_CONFIG
#
# --build-only fills the cache and installs nothing (for a PostgreSQL that
# other users share; install from the cache into a private copy later).
#
# Citus 13.2.2 (with the patch for PostgreSQL 15.20's headers) is used for
# PostgreSQL 15, Citus 14.0.1 for 16-18; the tarballs are taken from
# CITUS_VENDOR, ../shared/vendor beside the checkout, or the copy kept in the
# cache by an earlier run, and checked against the SHA256SUMS file there.  The cache is keyed by the checksums of
# the tarball and patch and by the PostgreSQL build (version, configure flags,
# compiler flags), so a second run, or a run for another copy of the same
# PostgreSQL, reuses the build.  Builds run niced, with at most two jobs.
#
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

install=1
if [ "${1:-}" = --build-only ]; then
	install=0
	shift
fi
pgc=${1:-${PG_CONFIG:-}}
[ -n "$pgc" ] && [ -x "$pgc" ] || { echo "usage: $0 PG_CONFIG" >&2; exit 2; }

major=$("$pgc" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
case "$major" in
15) files="citus-13.2.2.tar.gz citus-13.2.2-pg15.20.patch" ;;
16 | 17 | 18) files="citus-14.0.1.tar.gz" ;;
*) echo "no Citus for PostgreSQL $major" >&2; exit 1 ;;
esac

# The sources: CITUS_VENDOR, or ../shared/vendor beside the checkout, or the
# copy that an earlier run kept in the cache (a checkout elsewhere then still
# finds them); checked against the SHA256SUMS beside them.
kept="$(cache_dir)/vendor"
vendor=""
for dir in ${CITUS_VENDOR:-} "$(cd .. && pwd)/shared/vendor" "$kept"; do
	all=1
	for f in $files; do [ -f "$dir/$f" ] || all=0; done
	if [ "$all" = 1 ] && [ -f "$dir/SHA256SUMS" ]; then vendor=$dir; break; fi
done
[ -n "$vendor" ] || { echo "missing: $files (looked in ${CITUS_VENDOR:-} ../shared/vendor $kept)" >&2; exit 1; }
for f in $files; do
	(cd "$vendor" && grep " $f\$" SHA256SUMS | sha256sum -c --quiet -) >&2 ||
		{ echo "checksum mismatch: $vendor/$f" >&2; exit 1; }
done
if [ "$vendor" != "$kept" ]; then
	mkdir -p "$kept"
	for f in $files SHA256SUMS; do cp -f "$vendor/$f" "$kept/$f.new" && mv -f "$kept/$f.new" "$kept/$f"; done
fi
set -- $files
tarball=$vendor/$1
patch=${2:+$vendor/$2}

version=$(basename "$tarball" .tar.gz)
# (the files' contents, not where they were found)
sum=$( { sha256sum <"$tarball"; [ -z "$patch" ] || sha256sum <"$patch"; } | sha256sum | cut -c1-16)
pgid=$( { "$pgc" --version; "$pgc" --configure; "$pgc" --cflags; } | sha256sum | cut -c1-12)
prefix="$(cache_dir)/$version-$sum-pg$major-$pgid"

# Copy the cached files into the PostgreSQL of $pgc (root may be needed).
# A file that is already there unchanged is left alone, and a changed one is
# replaced by a rename, never rewritten in place: servers that have citus.so
# loaded would crash on a library changed under them.
sync_tree() {
	as_root sh -c '
		set -e
		cd "$1"
		find . -type d | while read -r d; do mkdir -p "$2/$d"; done
		find . ! -type d | while read -r f; do
			if ! cmp -s "$f" "$2/$f"; then
				cp -a "$f" "$2/$f.citus-new"
				mv -f "$2/$f.citus-new" "$2/$f"
			fi
		done
	' sh "$1" "$2"
}
install_into() {
	sync_tree "$prefix/lib" "$("$pgc" --pkglibdir)"
	sync_tree "$prefix/share" "$("$pgc" --sharedir)"
}

if [ ! -f "$prefix/.complete" ]; then
	# one build at a time: a second caller waits for the first and reuses it
	exec 9>"$prefix.lock"
	flock 9
fi
if [ ! -f "$prefix/.complete" ]; then
	# another apt-get may hold dpkg's lock for a while: try again
	for try in 1 2 3 4 5 6; do
		ensure_packages libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev \
			autoconf make gcc libc6-dev patch >&2 && break
		[ "$try" -lt 6 ] || exit 1
		sleep 20
	done
	work=$(mktemp -d /tmp/citusbuild.XXXXXX)
	trap 'rm -rf "$work"' EXIT
	echo "building $version for PostgreSQL $major into $prefix" >&2
	tar -xzf "$tarball" -C "$work"
	src="$work/$version"
	rm -rf "$prefix"
	(
		cd "$src"
		[ -z "$patch" ] || patch -s -p1 <"$patch"
		nice -n 10 ./configure PG_CONFIG="$pgc" >"$work/configure.log" 2>&1 ||
			{ tail -n 30 "$work/configure.log"; exit 1; }
		nice -n 10 make -j2 -s >"$work/make.log" 2>&1 ||
			{ tail -n 40 "$work/make.log"; exit 1; }
		make -s install DESTDIR="$work/stage" >"$work/install.log" 2>&1 ||
			{ tail -n 40 "$work/install.log"; exit 1; }
	) >&2
	# keep the files by role, not by the absolute paths of this PostgreSQL
	mkdir -p "$prefix/lib" "$prefix/share"
	cp -a "$work/stage$("$pgc" --pkglibdir)/." "$prefix/lib/"
	cp -a "$work/stage$("$pgc" --sharedir)/." "$prefix/share/"
	touch "$prefix/.complete"
fi
[ "$install" -eq 0 ] || install_into
echo "$prefix"
