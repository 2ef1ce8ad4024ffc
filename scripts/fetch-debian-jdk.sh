#!/usr/bin/env bash
# fetch-debian-jdk.sh MAJOR... -- Debian sid's OpenJDK MAJOR (21, 26; built with DTrace support: USDT probes
# in libjvm.so; the JDK for jcmd) and sid's libc6, whose loader runs it on an older glibc (it needs 2.38):
#
#   LIB=ROOT/usr/lib/x86_64-linux-gnu J=ROOT/usr/lib/jvm/java-MAJOR-openjdk-amd64
#   $LIB/ld-linux-x86-64.so.2 --library-path $LIB:$J/lib:$J/lib/server $J/bin/java ...
#
# Downloaded without installing them (scripts/lib/debian-fetch.sh) and unpacked into
#
#   ${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-jdkMAJOR/root
#
# which is printed, one line per MAJOR, on stdout (progress goes to stderr). Idempotent.
#
# Environment: UTRACE_CACHE, and those of scripts/lib/debian-fetch.sh.
set -euo pipefail
FETCH_NAME=fetch-debian-jdk
. "$(dirname "$0")/lib/debian-fetch.sh"

[ $# -gt 0 ] || die "usage: $0 MAJOR...   (21, 26: what Debian sid ships)"
if [ $# -gt 1 ]; then
    for major in "$@"; do "$0" "$major"; done
    exit 0
fi
MAJOR=$1
case $MAJOR in (*[!0-9]*|'') die "not a Java feature version: $MAJOR" ;; esac

PKGS=("openjdk-$MAJOR-jre-headless" "openjdk-$MAJOR-jdk-headless" libc6)
DEST=${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-jdk$MAJOR
ROOT=$DEST/root
STAMP=$DEST/.utrace-complete
JDK=usr/lib/jvm/java-$MAJOR-openjdk-amd64

done_already() {
    [ -f "$STAMP" ] && [ -x "$ROOT/$JDK/bin/java" ] && [ -x "$ROOT/$JDK/bin/jcmd" ] \
        && [ -f "$ROOT/$JDK/lib/server/libjvm.so" ] && [ -x "$ROOT/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ]
}
debian_once done_already "$ROOT" "$DEST/.lock"
debian_download "$DEST" sid "${PKGS[@]}"
rm -rf "$ROOT"
mv "$WORK/root" "$ROOT"
debian_stamp >"$STAMP"
done_already || die "unpacked packages lack java, jcmd, libjvm.so or the loader"
printf '%s\n' "$ROOT"
