#!/usr/bin/env bash
# fetch-go.sh VERSION -- fetch a Debian-packaged Go toolchain without installing it.
#
#   VERSION: 1.15 | 1.21 | 1.22 | 1.23 | 1.24 | 1.25 | 1.26 | 1.27
#
# Suites: 1.15 bullseye; 1.21-1.23 bookworm-backports; 1.24 trixie; 1.25-1.27
# trixie-backports (also in forky/sid for 1.26/1.27; backports is the one suite with
# all three). The toolchain binaries (go, compile, link, ...) are static, so packages
# built for trixie run on older systems too.
#
# Downloads golang-VERSION-go and golang-VERSION-src from the Debian archive suite
# that carries them, using a PRIVATE apt sources list / state / cache (nothing under
# /etc/apt or /var/lib/apt is touched), and unpacks them with `dpkg -x` into
#
#   ${UTRACE_TOOLCHAINS:-$HOME/.cache/utrace/toolchains}/go-VERSION
#
# The GOROOT (…/go-VERSION/usr/lib/go-VERSION) is printed as the LAST line on stdout;
# all progress goes to stderr, so `GOROOT=$(scripts/fetch-go.sh 1.15)` works.
# Idempotent: when the toolchain is already unpacked it only prints the GOROOT.
#
# Environment:
#   UTRACE_TOOLCHAINS     cache root (default $HOME/.cache/utrace/toolchains)
#   UTRACE_DEBIAN_MIRROR  Debian archive URL (default: the one in /etc/apt, else
#                         http://deb.debian.org/debian)
#   UTRACE_DEBIAN_KEYRING keyring for signature checks
#                         (default /usr/share/keyrings/debian-archive-keyring.gpg)
set -euo pipefail

log() { printf 'fetch-go: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -eq 1 ] || die "usage: $0 VERSION   (1.15, 1.21-1.27)"
VERSION=$1

case "$VERSION" in
    1.15)           SUITE=bullseye ;;
    1.21|1.22|1.23) SUITE=bookworm-backports ;;
    1.24)           SUITE=trixie ;;
    1.25|1.26|1.27) SUITE=trixie-backports ;;
    *) die "unsupported Go version '$VERSION' (want 1.15 or 1.21-1.27)" ;;
esac

CACHE_ROOT=${UTRACE_TOOLCHAINS:-$HOME/.cache/utrace/toolchains}
DEST=$CACHE_ROOT/go-$VERSION
GOROOT_DIR=$DEST/usr/lib/go-$VERSION
STAMP=$DEST/.utrace-complete

if [ -f "$STAMP" ] && [ -x "$GOROOT_DIR/bin/go" ]; then
    printf '%s\n' "$GOROOT_DIR"
    exit 0
fi

for tool in apt-get dpkg; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done

mkdir -p "$CACHE_ROOT"

# Serialise concurrent fetches of the same version.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE_ROOT/.go-$VERSION.lock"
    flock 9
    if [ -f "$STAMP" ] && [ -x "$GOROOT_DIR/bin/go" ]; then
        printf '%s\n' "$GOROOT_DIR"
        exit 0
    fi
fi

# --- Which Debian mirror does this machine use? -------------------------------
# Accept a URI whose path ends in /debian (not debian-security, not snapshot.debian.org
# time-stamped URLs, not third-party repos). Reads both one-line *.list files and
# deb822 *.sources files (what apt itself reads; *.disabled etc. are ignored).
APT_ETC=${UTRACE_APT_ETC:-/etc/apt}   # only for testing this parser
detect_mirror() {
    local files=() f
    [ -f "$APT_ETC/sources.list" ] && files+=("$APT_ETC/sources.list")
    for f in "$APT_ETC"/sources.list.d/*.list "$APT_ETC"/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    {
        for f in "${files[@]}"; do
            case "$f" in
                *.sources)
                    # deb822: "URIs: a b c" (only stanzas whose Types include deb)
                    awk '
                        /^[[:space:]]*#/ { next }
                        /^[[:space:]]*$/ { if (isdeb) for (i in u) print u[i]; delete u; isdeb=0; n=0; next }
                        tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb=1 }
                        tolower($1) == "uris:"  { for (i = 2; i <= NF; i++) u[n++] = $i }
                        tolower($1) == "enabled:" && tolower($2) == "no" { isdeb=0; delete u }
                        END { if (isdeb) for (i in u) print u[i] }
                    ' "$f" ;;
                *)
                    # one-line: deb [opts] URI suite comp...
                    awk '
                        $1 == "deb" {
                            i = 2
                            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                            if (i <= NF) print $i
                        }
                    ' "$f" ;;
            esac
        done
    } | grep -E '^(https?|ftp)://[^ ]+/debian/?$' | grep -v -- '-security' | head -n1 | sed 's:/*$::'
}

MIRROR=${UTRACE_DEBIAN_MIRROR:-}
if [ -z "$MIRROR" ]; then
    MIRROR=$(detect_mirror || true)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
log "Go $VERSION: suite $SUITE from $MIRROR"

KEYRING=${UTRACE_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

WORK=$(mktemp -d "$CACHE_ROOT/.fetch-go-$VERSION.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs" "$WORK/root"

APT_OPTS=(
    -o "Dir::Etc::sourcelist=$WORK/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$WORK/lists"
    -o "Dir::Cache=$WORK/cache"
    -o "Dir::Cache::archives=$WORK/cache/archives"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "Acquire::Languages=none"
    -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
    -o "Debug::NoLocking=1"
    -q
)
# As root apt drops to the _apt user for downloads, which cannot write our private dirs.
[ "$(id -u)" -ne 0 ] || APT_OPTS+=(-o "APT::Sandbox::User=root")

write_sources() {   # $1: apt source options ("" for none)
    printf 'deb %s%s %s main\n' "${1:+[$1] }" "$MIRROR" "$SUITE" >"$WORK/sources.list"
}

update() {
    rm -rf "$WORK/lists"; mkdir -p "$WORK/lists/partial"
    apt-get "${APT_OPTS[@]}" update >&2 || return 1
    # apt-get update exits 0 when the mirror cannot be reached at all: require an index.
    if ! ls "$WORK"/lists/*_Packages* >/dev/null 2>&1; then
        die "could not fetch the $SUITE package index from $MIRROR (network? mirror?)"
    fi
}

SIGNED=yes
if [ -r "$KEYRING" ]; then
    write_sources "signed-by=$KEYRING"
else
    write_sources ""   # apt's default trusted keys
fi
if ! update; then
    if [ "$SUITE" = trixie ] || [ "$SUITE" = trixie-backports ]; then
        # Trixie (and its backports) is signed with keys newer than the ones some bookworm keyrings ship
        # (debian-archive-keyring < 2023.3+deb12u2). Only for this one suite, fall back to
        # an unverified download; the other suites always require a valid signature.
        log "WARNING: signature check for $SUITE failed; retrying with [trusted=yes] (unverified)"
        SIGNED=no
        write_sources "trusted=yes"
        update || die "apt-get update for $SUITE failed even unverified"
    else
        die "apt-get update for $SUITE failed (see above)"
    fi
fi

PKGS=("golang-$VERSION-go" "golang-$VERSION-src")
(
    cd "$WORK/debs"
    apt-get "${APT_OPTS[@]}" download "${PKGS[@]}" >&2
) || die "apt-get download ${PKGS[*]} failed"

for deb in "$WORK"/debs/*.deb; do
    [ -f "$deb" ] || die "no .deb downloaded"
    log "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$WORK/root"
done

NEW_GOROOT=$WORK/root/usr/lib/go-$VERSION
[ -x "$NEW_GOROOT/bin/go" ] || die "unpacked packages have no usr/lib/go-$VERSION/bin/go"

# Move into place atomically-ish (replace any half-finished previous attempt).
rm -rf "$DEST"
mv "$WORK/root" "$DEST"

# Verify: run the toolchain from its new home (GOROOT explicit: the binary's built-in
# default is /usr/lib/go-$VERSION, which need not exist here).
if ! out=$(env -u GOFLAGS GOROOT="$GOROOT_DIR" GOTOOLCHAIN=local "$GOROOT_DIR/bin/go" version 2>&1); then
    die "'$GOROOT_DIR/bin/go version' failed: $out"
fi
case "$out" in
    "go version go$VERSION"*) ;;
    *) die "unexpected '$GOROOT_DIR/bin/go version' output: $out" ;;
esac
log "$out (signature verified: $SIGNED)"

{
    printf 'version=%s\nsuite=%s\nmirror=%s\nsigned=%s\n' "$VERSION" "$SUITE" "$MIRROR" "$SIGNED"
    printf 'go=%s\n' "$out"
    ls "$WORK"/debs/*.deb | xargs -n1 basename | sed 's/^/deb=/'
} >"$STAMP"

printf '%s\n' "$GOROOT_DIR"
