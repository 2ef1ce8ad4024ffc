#!/usr/bin/env bash
# fetch-debian-jdk21.sh -- Debian sid's OpenJDK 21 (built with DTrace support: USDT probes in libjvm.so; the
# JDK for jcmd) and sid's libc6, whose loader runs it on an older glibc (it needs glibc 2.38):
#
#   LIB=ROOT/usr/lib/x86_64-linux-gnu J=ROOT/usr/lib/jvm/java-21-openjdk-amd64
#   $LIB/ld-linux-x86-64.so.2 --library-path $LIB:$J/lib:$J/lib/server $J/bin/java ...
#
# Downloaded without installing them (scripts/lib/debian-fetch.sh) and unpacked into
#
#   ${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-jdk21/root
#
# which is printed as the LAST line on stdout (progress goes to stderr). Idempotent.
#
# Environment: UTRACE_CACHE, and those of scripts/lib/debian-fetch.sh.
set -euo pipefail
FETCH_NAME=fetch-debian-jdk21
. "$(dirname "$0")/lib/debian-fetch.sh"

PKGS=(openjdk-21-jre-headless openjdk-21-jdk-headless libc6)
DEST=${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/debian-jdk21
ROOT=$DEST/root
STAMP=$DEST/.utrace-complete
JDK=usr/lib/jvm/java-21-openjdk-amd64

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
