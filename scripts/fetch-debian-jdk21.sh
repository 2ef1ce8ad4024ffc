#!/usr/bin/env bash
# fetch-debian-jdk21.sh -- Debian sid's OpenJDK 21 (built with DTrace support: USDT probes in libjvm.so; the
# JDK for jcmd) and sid's libc6, whose loader runs it on an older glibc (it needs glibc 2.38):
#
#   LIB=ROOT/usr/lib/x86_64-linux-gnu J=ROOT/usr/lib/jvm/java-21-openjdk-amd64
#   $LIB/ld-linux-x86-64.so.2 --library-path $LIB:$J/lib:$J/lib/server $J/bin/java ...
#
# Downloaded with a PRIVATE apt sources list / state / cache (nothing under /etc/apt or /var/lib/apt is
# touched) and unpacked with `dpkg -x` into
#
#   ${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-jdk21/root
#
# which is printed as the LAST line on stdout (progress goes to stderr). Idempotent.
#
# Environment: UTRACE_CACHE, UTRACE_DEBIAN_MIRROR (default: the machine's own Debian URI, else
# http://deb.debian.org/debian), UTRACE_DEBIAN_KEYRING.
set -euo pipefail

log() { printf 'fetch-debian-jdk21: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

PKGS=(openjdk-21-jre-headless openjdk-21-jdk-headless libc6)
DEST=${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-jdk21
ROOT=$DEST/root
STAMP=$DEST/.utrace-complete
JDK=usr/lib/jvm/java-21-openjdk-amd64

done_already() {
    [ -f "$STAMP" ] && [ -x "$ROOT/$JDK/bin/java" ] && [ -x "$ROOT/$JDK/bin/jcmd" ] \
        && [ -f "$ROOT/$JDK/lib/server/libjvm.so" ] && [ -x "$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ]
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
done_already || die "unpacked packages lack java, jcmd, libjvm.so or the loader"
printf '%s\n' "$ROOT"
