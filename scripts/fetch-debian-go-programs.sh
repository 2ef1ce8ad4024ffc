#!/usr/bin/env bash
# fetch-debian-go-programs.sh -- Go programs exactly as Debian sid ships them (externally linked, cgo,
# stripped, a few C symbols): webhook, prometheus-node-exporter, fzf. Downloaded without installing them
# (scripts/lib/debian-fetch.sh) and unpacked into
#
#   ${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-go/root
#
# which is printed as the LAST line on stdout (progress goes to stderr). Idempotent.
# They run on Debian 12's glibc as they are. Debian's -dbgsym packages live in the debian-debug archive,
# which this network does not serve; the tests use other oracles (see tests/e2e/test_go_distro.py).
#
# Environment: UTRACE_CACHE, and those of scripts/lib/debian-fetch.sh.
set -euo pipefail
FETCH_NAME=fetch-debian-go-programs
. "$(dirname "$0")/lib/debian-fetch.sh"

PKGS=(webhook prometheus-node-exporter fzf)
DEST=${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-go
ROOT=$DEST/root
STAMP=$DEST/.utrace-complete

done_already() {
    [ -f "$STAMP" ] && [ -x "$ROOT/usr/bin/webhook" ] && [ -x "$ROOT/usr/bin/prometheus-node-exporter" ] \
        && [ -x "$ROOT/usr/bin/fzf" ]
}
debian_once done_already "$ROOT" "$DEST/.lock"
debian_download "$DEST" sid "${PKGS[@]}"
rm -rf "$ROOT"
mv "$WORK/root" "$ROOT"
debian_stamp >"$STAMP"
done_already || die "unpacked packages lack a program"
printf '%s\n' "$ROOT"
