#!/usr/bin/env bash
# fetch-debian-go-programs.sh -- Go programs exactly as Debian sid ships them (externally linked, cgo,
# stripped, a few C symbols): webhook, prometheus-node-exporter, fzf. Downloaded with a PRIVATE apt
# sources list / state / cache (nothing under /etc/apt or /var/lib/apt is touched) and unpacked with
# `dpkg -x` into
#
#   ${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-go/root
#
# which is printed as the LAST line on stdout (progress goes to stderr). Idempotent.
# They run on Debian 12's glibc as they are. Debian's -dbgsym packages live in the debian-debug archive,
# which this network does not serve; the tests use other oracles (see tests/e2e/test_go_distro.py).
#
# Environment: UTRACE_CACHE, UTRACE_DEBIAN_MIRROR (default: the machine's own Debian URI, else
# http://deb.debian.org/debian), UTRACE_DEBIAN_KEYRING.
set -euo pipefail

log() { printf 'fetch-debian-go-programs: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

PKGS=(webhook prometheus-node-exporter fzf)
DEST=${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-go
ROOT=$DEST/root
STAMP=$DEST/.utrace-complete

done_already() {
    [ -f "$STAMP" ] && [ -x "$ROOT/usr/bin/webhook" ] && [ -x "$ROOT/usr/bin/prometheus-node-exporter" ] \
        && [ -x "$ROOT/usr/bin/fzf" ]
}
if done_already; then printf '%s\n' "$ROOT"; exit 0; fi

for tool in apt-get dpkg; do command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"; done
mkdir -p "$DEST"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DEST/.lock"
    flock 9
    if done_already; then printf '%s\n' "$ROOT"; exit 0; fi
fi

MIRROR=${UTRACE_DEBIAN_MIRROR:-}
if [ -z "$MIRROR" ]; then
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | grep -oE '(https?|ftp)://[^ ]+/debian/?( |$)' | grep -v -- '-security' | head -n1 | tr -d ' ' | sed 's:/*$::' || true)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KEYRING=${UTRACE_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
log "sid from $MIRROR: ${PKGS[*]}"

WORK=$(mktemp -d "$DEST/.fetch.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs" "$WORK/root"
APT_OPTS=(
    -o "Dir::Etc::sourcelist=$WORK/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache"
    -o "Dir::Cache::archives=$WORK/cache/archives" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Languages=none" -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
    -o "Debug::NoLocking=1" -q
)
[ "$(id -u)" -ne 0 ] || APT_OPTS+=(-o "APT::Sandbox::User=root")
SIGNED=yes
if [ -r "$KEYRING" ]; then
    printf 'deb [signed-by=%s] %s sid main\n' "$KEYRING" "$MIRROR" >"$WORK/sources.list"
else
    printf 'deb %s sid main\n' "$MIRROR" >"$WORK/sources.list"
fi
if ! apt-get "${APT_OPTS[@]}" update >&2 || ! ls "$WORK"/lists/*_Packages* >/dev/null 2>&1; then
    # sid is signed with keys newer than some Debian 12 keyrings: fall back to an unverified index.
    log "WARNING: signature check for sid failed; retrying with [trusted=yes] (unverified)"
    SIGNED=no
    printf 'deb [trusted=yes] %s sid main\n' "$MIRROR" >"$WORK/sources.list"
    rm -rf "$WORK/lists"; mkdir -p "$WORK/lists/partial"
    apt-get "${APT_OPTS[@]}" update >&2 || die "apt-get update for sid failed"
    ls "$WORK"/lists/*_Packages* >/dev/null 2>&1 || die "could not fetch the sid package index from $MIRROR"
fi
(cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download "${PKGS[@]}" >&2) || die "apt-get download ${PKGS[*]} failed"
for deb in "$WORK"/debs/*.deb; do
    log "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$WORK/root"
done
rm -rf "$ROOT"
mv "$WORK/root" "$ROOT"
{
    printf 'suite=sid\nmirror=%s\nsigned=%s\n' "$MIRROR" "$SIGNED"
    ls "$WORK"/debs/*.deb | xargs -n1 basename | sed 's/^/deb=/'
} >"$STAMP"
done_already || die "unpacked packages lack a program"
printf '%s\n' "$ROOT"
