#!/usr/bin/env bash
# build-fixtures.sh [OUTDIR] -- build the utrace test fixtures (default OUTDIR: fixtures/build).
#
# Builds whatever the machine has toolchains for, into OUTDIR:
#   c/sdt_demo            gcc -O2 -g -fno-pie -no-pie   (USDT probes + demo_add/demo_greet)
#   c/sdt_demo-pie        gcc -O2 -g -fPIE -pie
#   c/sdt_demo-stripped   strip of c/sdt_demo (no .symtab/DWARF; .note.stapsdt kept)
#   c/hot                 gcc -O2 -g                    (benchmark loop)
#   c/faults, c/faults-alt  gcc -O2 -g -pthread         (threads/fork/exec fixture; -alt: -DFAULTS_ALT)
#   c/clones              gcc -O2 -g                    (GCC .constprop/.isra clones)
#   cpp/overloads         g++ -O2 -g -fno-inline        (Debian default: PIE)
#   cpp/stack             g++ -O1 -g -fno-inline -fno-omit-frame-pointer (stacks)
#   cpp/geo, cpp/geo-nodwarf  g++ -O2 -g / g++ -O2      (is geo::canvas::draw a member? DWARF or nothing)
#   cpp/ostream           g++ -O2                       (calls libstdc++'s std::ostream::put, _M_insert<long>)
#   cpp/clones            g++ -O2 -g of c/clones.c      (C++ GCC clones)
#   cpp/operators         g++ -std=c++20 -O2 -g         (operator names: <, <<, (), [], conversions, new)
#   go/greet, go/httpget                      system Go (1.19 on bookworm)
#   go/greet-stripped, go/httpget-stripped    system Go, -ldflags='-s -w'
#   go/greet-pie, go/httpget-pie              system Go, -buildmode=pie
#   go/greet-extlink, go/httpget-extlink      system Go, CGO_ENABLED=1 -ldflags=-linkmode=external
#                                             (the host's $CC links it, as for any cgo program)
#   go/generic, go/generic-stripped           system Go (generic functions need Go >= 1.18)
#   go/<prog>-go<ver>{,-stripped,-pie,-extlink}  fetched Go <ver> (scripts/fetch-go.sh): the same
#                                             variants; 1.15 is stack ABI and has no generic
#   java/Demo.class (+ Demo$Worker.class)     javac; run: java -cp OUTDIR/java Demo
#   java/StackDemo.class                      javac (JIT-compiled frames for --stack)
#   manifest.json                             what was built, with which toolchain/flags
# Node fixtures (fixtures/node/*.js) need no build and are used in place.
#
# All Go builds: GO111MODULE=off (no go.mod), CGO_ENABLED=0 (static, pure Go) except -extlink,
# GOPATH/GOCACHE under ${UTRACE_CACHE:-$HOME/.cache/utrace}.
#
# Each component (c, cpp, go-<version>, java) is skipped when a stamp file in
# OUTDIR/.stamps holds the same hash of (this script, its sources, toolchain identity)
# and its outputs exist, so a warm run takes well under a second.
#
# Environment:
#   UTRACE_GO_VERSIONS   fetched Go versions to build with (default "1.15 1.21 ... 1.27";
#                        "" for none). Outputs: go/<prog>-go<ver>{,-stripped,-pie,-extlink}
#   UTRACE_FIXTURES_STRICT=1   treat a missing toolchain as a failure (default: skip it)
#   CC, CXX, GO, JAVAC   override the compilers
#   UTRACE_CACHE         cache root for Go build caches (default $HOME/.cache/utrace)
#   UTRACE_TOOLCHAINS    passed on to scripts/fetch-go.sh
#
# Exit status: 0 when everything that could be built was built (skips are reported),
# 1 when a build failed (or a toolchain was missing with UTRACE_FIXTURES_STRICT=1).
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SRC=$ROOT/fixtures

OUTDIR=${1:-$ROOT/fixtures/build}
mkdir -p "$OUTDIR" || { echo "build-fixtures: cannot create $OUTDIR" >&2; exit 1; }
OUTDIR=$(cd "$OUTDIR" && pwd)
STAMPS=$OUTDIR/.stamps
LOGS=$OUTDIR/.logs
mkdir -p "$STAMPS" "$LOGS"

CACHE=${UTRACE_CACHE:-$HOME/.cache/utrace}
GO_VERSIONS=${UTRACE_GO_VERSIONS-1.15 1.21 1.22 1.23 1.24 1.25 1.26 1.27}
STRICT=${UTRACE_FIXTURES_STRICT:-0}

log() { printf 'build-fixtures: %s\n' "$*" >&2; }

# One build at a time per OUTDIR (tests running in parallel may all call us).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$OUTDIR/.lock"
    flock 9
fi

T0=$(date +%s.%N)
BUILT=() CACHED=() SKIPPED=() FAILED=()

SELF_HASH=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-64)

# hash_of STRING FILE... -> sha256 over a string, this script and the files' contents
hash_of() {
    local extra=$1; shift
    {
        printf '%s\n%s\n' "$SELF_HASH" "$extra"
        local f
        for f in "$@"; do
            printf '== %s\n' "${f#"$ROOT"/}"
            cat "$f"
        done
    } | sha256sum | cut -c1-64
}

# up_to_date COMPONENT HASH OUTPUT... -> 0 when the stamp matches and outputs exist
up_to_date() {
    local comp=$1 hash=$2; shift 2
    [ -f "$STAMPS/$comp" ] && [ "$(cat "$STAMPS/$comp")" = "$hash" ] || return 1
    local o
    for o in "$@"; do [ -e "$OUTDIR/$o" ] || return 1; done
    return 0
}

# run_component COMPONENT HASH BUILD_FUNCTION OUTPUT...
# (the function writes "$STAMPS/COMPONENT.manifest" lines: "path<TAB>toolchain<TAB>flags")
run_component() {
    local comp=$1 hash=$2 fn=$3; shift 3
    if up_to_date "$comp" "$hash" "$@"; then
        CACHED+=("$comp")
        return 0
    fi
    rm -f "$STAMPS/$comp" "$STAMPS/$comp.manifest"
    local t rc
    t=$(date +%s.%N)
    # A subshell outside any if/&&: `set -e` inside the build function works.
    ( set -e; "$fn" ) >"$LOGS/$comp.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        printf '%s\n' "$hash" >"$STAMPS/$comp"
        BUILT+=("$comp")
        log "$comp: built in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1fs", b-a}')"
    else
        FAILED+=("$comp")
        log "$comp: FAILED, log $LOGS/$comp.log:"
        sed 's/^/    /' "$LOGS/$comp.log" >&2
    fi
}

skip() {   # skip COMPONENT REASON
    SKIPPED+=("$1 ($2)")
    rm -f "$STAMPS/$1" "$STAMPS/$1.manifest"
    log "$1: skipped: $2"
}

manifest() {   # manifest COMPONENT PATH TOOLCHAIN FLAGS
    printf '%s\t%s\t%s\n' "$2" "$3" "$4" >>"$STAMPS/$1.manifest"
}

# ------------------------------------------------------------------------- C
CC=${CC:-gcc}
C_SRCS=("$SRC/c/sdt_demo.c" "$SRC/c/hot.c" "$SRC/c/faults.c" "$SRC/c/clones.c")
C_OUTS=(c/sdt_demo c/sdt_demo-pie c/sdt_demo-stripped c/hot c/faults c/faults-alt c/clones)
C_FLAGS="-O2 -g -Wall"

build_c() {
    mkdir -p "$OUTDIR/c"
    local o=$OUTDIR/c
    # Debian's gcc builds PIE by default: the "normal" build asks for a fixed-address
    # executable explicitly so that it differs from the -pie variant.
    $CC $C_FLAGS -fno-pie -no-pie -o "$o/sdt_demo.tmp" "$SRC/c/sdt_demo.c"
    $CC $C_FLAGS -fPIE -pie -o "$o/sdt_demo-pie.tmp" "$SRC/c/sdt_demo.c"
    strip -o "$o/sdt_demo-stripped.tmp" "$o/sdt_demo.tmp"
    $CC $C_FLAGS -o "$o/hot.tmp" "$SRC/c/hot.c"
    $CC $C_FLAGS -pthread -o "$o/faults.tmp" "$SRC/c/faults.c"
    $CC $C_FLAGS -pthread -DFAULTS_ALT -o "$o/faults-alt.tmp" "$SRC/c/faults.c"
    $CC $C_FLAGS -o "$o/clones.tmp" "$SRC/c/clones.c"
    local f
    for f in sdt_demo sdt_demo-pie sdt_demo-stripped hot faults faults-alt clones; do mv -f "$o/$f.tmp" "$o/$f"; done
    manifest c c/sdt_demo "$CC_ID" "$C_FLAGS -fno-pie -no-pie"
    manifest c c/sdt_demo-pie "$CC_ID" "$C_FLAGS -fPIE -pie"
    manifest c c/sdt_demo-stripped "$CC_ID" "strip of c/sdt_demo"
    manifest c c/hot "$CC_ID" "$C_FLAGS"
    manifest c c/faults "$CC_ID" "$C_FLAGS -pthread"
    manifest c c/faults-alt "$CC_ID" "$C_FLAGS -pthread -DFAULTS_ALT"
    manifest c c/clones "$CC_ID" "$C_FLAGS"
}

if command -v "$CC" >/dev/null 2>&1 && command -v strip >/dev/null 2>&1; then
    CC_ID="$(readlink -f "$(command -v "$CC")") $($CC -dumpfullversion 2>/dev/null || $CC -dumpversion)"
    # sys/sdt.h is part of the toolchain as far as the USDT notes are concerned
    SDT_H=$(printf '#include <sys/sdt.h>\n' | $CC -x c -E -M - 2>/dev/null | tr ' \\' '\n\n' | grep '/sys/sdt.h$' | head -n1)
    if [ -z "$SDT_H" ]; then
        skip c "<sys/sdt.h> not found (install systemtap-sdt-dev)"
    else
        run_component c "$(hash_of "$CC_ID|$C_FLAGS" "${C_SRCS[@]}" "$SDT_H")" build_c "${C_OUTS[@]}"
    fi
else
    skip c "no $CC or strip"
fi

# ----------------------------------------------------------------------- C++
CXX=${CXX:-g++}
CXX_FLAGS="-O2 -g -fno-inline -Wall"
CXX_STACK_FLAGS="-O1 -g -fno-inline -fno-omit-frame-pointer -Wall"
build_cpp() {
    mkdir -p "$OUTDIR/cpp"
    $CXX $CXX_FLAGS -o "$OUTDIR/cpp/overloads.tmp" "$SRC/cpp/overloads.cpp"
    mv -f "$OUTDIR/cpp/overloads.tmp" "$OUTDIR/cpp/overloads"
    manifest cpp cpp/overloads "$CXX_ID" "$CXX_FLAGS"
    $CXX $CXX_STACK_FLAGS -o "$OUTDIR/cpp/stack.tmp" "$SRC/cpp/stack.cpp"
    mv -f "$OUTDIR/cpp/stack.tmp" "$OUTDIR/cpp/stack"
    manifest cpp cpp/stack "$CXX_ID" "$CXX_STACK_FLAGS"
    local f
    $CXX -O2 -g -Wall -o "$OUTDIR/cpp/geo.tmp" "$SRC/cpp/geo.cpp"
    $CXX -O2 -Wall -o "$OUTDIR/cpp/geo-nodwarf.tmp" "$SRC/cpp/geo.cpp"
    $CXX -O2 -Wall -o "$OUTDIR/cpp/ostream.tmp" "$SRC/cpp/ostream.cpp"
    $CXX -x c++ -O2 -g -Wall -o "$OUTDIR/cpp/clones.tmp" "$SRC/c/clones.c"
    $CXX -std=c++20 -O2 -g -Wall -o "$OUTDIR/cpp/operators.tmp" "$SRC/cpp/operators.cpp"
    for f in geo geo-nodwarf ostream clones operators; do mv -f "$OUTDIR/cpp/$f.tmp" "$OUTDIR/cpp/$f"; done
    manifest cpp cpp/geo "$CXX_ID" "-O2 -g -Wall"
    manifest cpp cpp/geo-nodwarf "$CXX_ID" "-O2 -Wall"
    manifest cpp cpp/ostream "$CXX_ID" "-O2 -Wall"
    manifest cpp cpp/clones "$CXX_ID" "-x c++ -O2 -g -Wall"
    manifest cpp cpp/operators "$CXX_ID" "-std=c++20 -O2 -g -Wall"
}
if command -v "$CXX" >/dev/null 2>&1; then
    CXX_ID="$(readlink -f "$(command -v "$CXX")") $($CXX -dumpfullversion 2>/dev/null || $CXX -dumpversion)"
    run_component cpp "$(hash_of "$CXX_ID|$CXX_FLAGS|$CXX_STACK_FLAGS" "$SRC/cpp/overloads.cpp" "$SRC/cpp/stack.cpp" \
        "$SRC/cpp/geo.cpp" "$SRC/cpp/ostream.cpp" "$SRC/c/clones.c" "$SRC/cpp/operators.cpp")" \
        build_cpp cpp/overloads cpp/stack cpp/geo cpp/geo-nodwarf cpp/ostream cpp/clones cpp/operators
else
    skip cpp "no $CXX"
fi

# ------------------------------------------------------------------------ Go
GO_SRCS=("$SRC/go/greet/main.go" "$SRC/go/httpget/main.go" "$SRC/go/generic/main.go")
# What is built, "prog variant" (variant: normal|stripped|pie|extlink); generic needs Go >= 1.18.
# extlink (cgo + the host's C linker) is the layout of most distribution-built Go programs.
GO_BUILDS=("greet normal" "httpget normal" "greet stripped" "httpget stripped" "greet pie" "httpget pie"
    "greet extlink" "httpget extlink" "generic normal" "generic stripped")

# go_env GOROOT VERSION CGO -> run the rest of the arguments with a clean Go environment
go_env() {
    local goroot=$1 ver=$2 cgo=$3; shift 3
    env -u GOFLAGS -u GOARCH -u GOOS -u GOBIN -u GOEXPERIMENT \
        GOROOT="$goroot" GO111MODULE=off CGO_ENABLED="$cgo" CC="$CC" GOENV=off GOTOOLCHAIN=local \
        GOPATH="$CACHE/gopath" GOCACHE="$CACHE/gocache/go$ver" GOTMPDIR= \
        "$@"
}

# go_outputs SUFFIX VERSION -> the output paths (relative to OUTDIR) of GO_BUILDS for that toolchain
go_outputs() {
    local suffix=$1 ver=$2 b prog variant
    for b in "${GO_BUILDS[@]}"; do
        read -r prog variant <<<"$b"
        go_wanted "$prog" "$variant" "$ver" || continue
        printf 'go/%s%s%s\n' "$prog" "$suffix" "$([ "$variant" = normal ] || printf -- '-%s' "$variant")"
    done
}

go_wanted() {   # go_wanted PROG VARIANT VERSION
    case "$1" in generic) [ "$(printf '%s\n1.18\n' "$3" | sort -V | head -n1)" = 1.18 ] || return 1 ;; esac
    case "$2" in extlink) [ -n "$HAVE_CC" ] || return 1 ;; esac
    return 0
}

# build_go_variants GO GOROOT VERSION SUFFIX
build_go_variants() {
    local go=$1 goroot=$2 ver=$3 suffix=$4
    local comp=$CUR_GO_COMP b prog variant out flags cgo
    mkdir -p "$OUTDIR/go" "$CACHE/gopath" "$CACHE/gocache/go$ver"
    for b in "${GO_BUILDS[@]}"; do
        read -r prog variant <<<"$b"
        go_wanted "$prog" "$variant" "$ver" || continue
        cgo=0
        case "$variant" in
            normal)   out=$prog$suffix;          flags=() ;;
            stripped) out=$prog$suffix-stripped; flags=("-ldflags=-s -w") ;;
            pie)      out=$prog$suffix-pie;      flags=(-buildmode=pie) ;;
            extlink)  out=$prog$suffix-extlink;  flags=("-ldflags=-linkmode=external"); cgo=1 ;;
        esac
        # GOPATH mode builds a directory given relative to the current one.
        (cd "$SRC/go/$prog" && go_env "$goroot" "$ver" "$cgo" "$go" build "${flags[@]}" -o "$OUTDIR/go/$out.tmp" .) || return 1
        mv -f "$OUTDIR/go/$out.tmp" "$OUTDIR/go/$out" || return 1
        manifest "$comp" "go/$out" "$GO_ID" "GO111MODULE=off CGO_ENABLED=$cgo${flags[*]:+ ${flags[*]}}"
    done
}

# extlink builds need a C compiler (cgo and the external linker); without one they are skipped.
CC=${CC:-gcc}
HAVE_CC=
if command -v "$CC" >/dev/null 2>&1; then
    HAVE_CC="$(readlink -f "$(command -v "$CC")") $($CC -dumpfullversion 2>/dev/null || $CC -dumpversion)"
else
    log "no $CC: the Go -extlink fixtures are not built"
fi

# System Go (bookworm: 1.19)
SYS_GO=${GO:-}
if [ -z "$SYS_GO" ]; then
    if [ -x /usr/lib/go-1.19/bin/go ]; then SYS_GO=/usr/lib/go-1.19/bin/go
    elif command -v go >/dev/null 2>&1; then SYS_GO=$(command -v go)
    fi
fi
if [ -n "$SYS_GO" ] && SYS_GOROOT=$(env -u GOROOT GOENV=off "$SYS_GO" env GOROOT 2>/dev/null) && [ -n "$SYS_GOROOT" ]; then
    SYS_GO_VER=$(GOROOT=$SYS_GOROOT "$SYS_GO" env GOVERSION 2>/dev/null || true)
    SYS_GO_VER=${SYS_GO_VER#go}
    [ -n "$SYS_GO_VER" ] || SYS_GO_VER=$(GOROOT=$SYS_GOROOT "$SYS_GO" version | awk '{print $3}' | sed 's/^go//')
    GO_ID="$SYS_GOROOT go$SYS_GO_VER"
    CUR_GO_COMP=go-system
    build_go_system() { build_go_variants "$SYS_GO" "$SYS_GOROOT" "$SYS_GO_VER" ""; }
    mapfile -t outs < <(go_outputs "" "$SYS_GO_VER")
    run_component go-system "$(hash_of "$GO_ID|$HAVE_CC" "${GO_SRCS[@]}")" build_go_system "${outs[@]}"
else
    skip go-system "no go toolchain (install golang-go)"
fi

# Fetched Go toolchains (1.15 is the last stack-ABI release; 1.21-1.27 cover the 1.20+ pclntab,
# the goid offsets, generics with and without a DWARF dictionary parameter and 1.27's type data):
# the same variants as the system Go, since stripped, PIE and externally linked builds are where
# the table layouts differ (no .symtab; pie moves pclntab/relocates textStart; the C linker).
build_go_fetched() {
    build_go_variants "$FETCHED_GOROOT/bin/go" "$FETCHED_GOROOT" "$FETCHED_VER" "-go$FETCHED_VER"
}
for v in $GO_VERSIONS; do
    comp=go-$v
    if ! goroot=$("$SCRIPT_DIR/fetch-go.sh" "$v" 2>"$LOGS/fetch-go-$v.log" | tail -n1) || [ ! -x "$goroot/bin/go" ]; then
        skip "$comp" "scripts/fetch-go.sh $v failed, see $LOGS/fetch-go-$v.log"
        continue
    fi
    GO_ID="$goroot go$v ($(head -n1 "$goroot/VERSION" 2>/dev/null || echo '?'))"
    CUR_GO_COMP=$comp
    FETCHED_GOROOT=$goroot FETCHED_VER=$v
    mapfile -t outs < <(go_outputs "-go$v" "$v")
    run_component "$comp" "$(hash_of "$GO_ID|$HAVE_CC" "${GO_SRCS[@]}")" build_go_fetched "${outs[@]}"
done

# ---------------------------------------------------------------------- Java
JAVAC=${JAVAC:-javac}
build_java() {
    rm -rf "$OUTDIR/java.tmp"
    mkdir -p "$OUTDIR/java.tmp"
    "$JAVAC" -g -d "$OUTDIR/java.tmp" "$SRC/java/Demo.java" "$SRC/java/StackDemo.java"
    rm -rf "$OUTDIR/java"
    mv "$OUTDIR/java.tmp" "$OUTDIR/java"
    manifest java java/Demo.class "$JAVAC_ID" "-g"
}
if command -v "$JAVAC" >/dev/null 2>&1; then
    # Identify the JDK without starting a JVM: resolved javac path + its release file
    # + the modules image (size/mtime).
    javac_real=$(readlink -f "$(command -v "$JAVAC")")
    jhome=$(dirname "$(dirname "$javac_real")")
    JAVAC_ID="$javac_real $(grep -h '^JAVA_VERSION=' "$jhome/release" 2>/dev/null | tr -d '"') $(stat -c '%s-%Y' "$jhome/lib/modules" 2>/dev/null)"
    run_component java "$(hash_of "$JAVAC_ID" "$SRC/java/Demo.java" "$SRC/java/StackDemo.java")" build_java \
        java/Demo.class 'java/Demo$Worker.class' java/StackDemo.class
else
    skip java "no javac (install default-jdk-headless)"
fi

# ------------------------------------------------------------------ manifest
{
    printf '{\n'
    first=1
    # only the components of this run (built now or up to date), not leftovers of
    # earlier runs with other settings
    for comp in "${BUILT[@]}" "${CACHED[@]}"; do
        m=$STAMPS/$comp.manifest
        [ -f "$m" ] && [ -f "$STAMPS/$comp" ] || continue
        while IFS=$'\t' read -r path tool flags; do
            [ $first = 1 ] || printf ',\n'
            first=0
            printf '  "%s": {"component": "%s", "toolchain": "%s", "flags": "%s"}' \
                "$path" "$comp" "$tool" "$flags"
        done <"$m"
    done
    printf '\n}\n'
} >"$OUTDIR/manifest.json.tmp" && mv -f "$OUTDIR/manifest.json.tmp" "$OUTDIR/manifest.json"

# ------------------------------------------------------------------- summary
elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
join() { local IFS=,; printf '%s' "${*:-none}"; }
summary="build-fixtures: built [$(join "${BUILT[@]}")] cached [$(join "${CACHED[@]}")]"
[ ${#SKIPPED[@]} -eq 0 ] || summary+=" skipped [$(join "${SKIPPED[@]}")]"
[ ${#FAILED[@]} -eq 0 ] || summary+=" FAILED [$(join "${FAILED[@]}")]"
summary+=" in ${elapsed}s -> $OUTDIR"
echo "$summary"

if [ ${#FAILED[@]} -gt 0 ]; then exit 1; fi
if [ "$STRICT" = 1 ] && [ ${#SKIPPED[@]} -gt 0 ]; then exit 1; fi
exit 0
