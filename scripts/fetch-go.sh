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
# that carries them without installing them (scripts/lib/debian-fetch.sh) and unpacks
# them into
#
#   ${UTRACE_TOOLCHAINS:-$HOME/.cache/utrace/toolchains}/go-VERSION
#
# The GOROOT (…/go-VERSION/usr/lib/go-VERSION) is printed as the LAST line on stdout;
# all progress goes to stderr, so `GOROOT=$(scripts/fetch-go.sh 1.15)` works.
# Idempotent: when the toolchain is already unpacked it only prints the GOROOT.
#
# Environment: UTRACE_TOOLCHAINS (cache root, default $HOME/.cache/utrace/toolchains), and
# those of scripts/lib/debian-fetch.sh (mirror, keyring).
set -euo pipefail
FETCH_NAME=fetch-go
. "$(dirname "$0")/lib/debian-fetch.sh"

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

done_already() { [ -f "$STAMP" ] && [ -x "$GOROOT_DIR/bin/go" ]; }
# Concurrent fetches of the same version are serialised.
debian_once done_already "$GOROOT_DIR" "$CACHE_ROOT/.go-$VERSION.lock"
debian_download "$CACHE_ROOT" "$SUITE" "golang-$VERSION-go" "golang-$VERSION-src"

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

debian_stamp "version=$VERSION" "go=$out" >"$STAMP"

printf '%s\n' "$GOROOT_DIR"
