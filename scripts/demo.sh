#!/usr/bin/env bash
# `make demo`: utrace on the bundled demo programs. Run by `make demo` after set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
U=".venv/bin/utrace"
B=fixtures/build
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "$2"; }

step "Can this machine trace?" "utrace doctor"
$U doctor

step "Functions and USDT probes of a C program (one is semaphore-gated)" "utrace list $B/c/sdt_demo 'demo_*'; utrace list $B/c/sdt_demo --usdt"
$U list $B/c/sdt_demo 'demo_*'
$U list $B/c/sdt_demo --usdt

step "C++ overloads and templates, demangled" "utrace list $B/cpp/overloads 'demo::*'"
$U list $B/cpp/overloads 'demo::*'

step "HotSpot's USDT probes in libjvm.so" "utrace list /usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so 'hotspot:class__*'"
$U list /usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so 'hotspot:class__*' || true

step "Live: a Node HTTP server, from its first instruction" \
     "utrace node uv_tcp_listen 'node::TCPWrap::Listen' uv_accept --ret -- node fixtures/node/server.js --requests 3"
port=$((20000 + RANDOM % 20000))
(
  # three requests once the server listens; the server exits after answering them
  for _ in $(seq 50); do
    .venv/bin/python - "$port" <<'PY' && break
import sys, urllib.request
port = sys.argv[1]
for i in range(1, 4):
    urllib.request.urlopen(f"http://127.0.0.1:{port}/demo/{i}", timeout=5).read()
PY
    sleep 0.2
  done
) 2>/dev/null &
$U node uv_tcp_listen 'node::TCPWrap::Listen' uv_accept --ret --duration 30 -- node fixtures/node/server.js --port "$port" --requests 3
wait

step "JavaScript functions by name: arguments, returns and script:line, in a stock node" \
     "utrace node 'js:priceOf' 'js:add' --ret -- node fixtures/node/prices.js"
$U node 'js:priceOf' 'js:add' --ret -- node fixtures/node/prices.js

step "Live: a running Java program by pid: its class loads, GC pauses with durations, its threads" \
     "utrace java --pid PID class-load:Demo hotspot:gc__begin hotspot:gc__end thread"
# Demo waits for a line on stdin after printing "ready PID"; it is released once the probes are armed.
jtmp=$(mktemp -d)
mkfifo "$jtmp/in"
java -cp $B/java Demo --wait <"$jtmp/in" &
jpid=$!
exec 8>"$jtmp/in"
$U java --pid "$jpid" class-load:Demo hotspot:gc__begin hotspot:gc__end thread --duration 60 2>"$jtmp/err" &
upid=$!
for _ in $(seq 300); do grep -q attached "$jtmp/err" && break; sleep 0.1; done
cat "$jtmp/err"
echo go >&8
exec 8>&-
wait "$upid" || true
wait "$jpid" || true
rm -rf "$jtmp"

step "Java from its first instruction: every class load, counted against the JVM's own log" \
     "utrace java class-load --json -- java -Xlog:class+load:file=LOG -cp $B/java Demo"
jlog=$(mktemp)
n=$($U java class-load --json -- java "-Xlog:class+load:file=$jlog" -cp $B/java Demo 2>/dev/null | grep -c '"kind": "event"' || true)
echo "utrace saw $n class loads; the JVM logged $(grep -c 'class,load' "$jlog")"
rm -f "$jlog"

step "Live: arguments by signature, USDT probes, returns with latency" \
     "utrace native $B/c/sdt_demo 'demo_greet(const char *name, long n)' demo_add 'utrace_demo:*' --ret -- $B/c/sdt_demo 3"
$U native $B/c/sdt_demo 'demo_greet(const char *name, long n)' 'demo_add(int a, int b)' 'utrace_demo:*' --ret -- $B/c/sdt_demo 3

step "Go: net/http.Get, inlined by the compiler, traced from DWARF (a real HTTP server answers)" \
     "utrace go $B/go/httpget net/http.Get -- $B/go/httpget http://127.0.0.1:PORT/a http://127.0.0.1:PORT/b?q=1"
www=$(mktemp -d)
.venv/bin/python -u -m http.server 0 --bind 127.0.0.1 --directory "$www" >"$www/.port" 2>/dev/null &
httpd=$!
for _ in $(seq 50); do grep -q port "$www/.port" 2>/dev/null && break; sleep 0.1; done
gport=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$www/.port" | head -n1)
echo hello >"$www/a"
$U go $B/go/httpget net/http.Get -- $B/go/httpget "http://127.0.0.1:$gport/a" "http://127.0.0.1:$gport/b?q=1" || true
kill "$httpd" 2>/dev/null || true
rm -rf "$www"

step "Go: arguments, results and error messages, both ABIs, returns without uretprobes" \
     "utrace go $B/go/greet main.Greet 'main.(*T).M' --ret -- $B/go/greet 2   (and the Go 1.15 stack-ABI build)"
$U go $B/go/greet main.Greet 'main.(*T).M' --ret -- $B/go/greet 2 5
$U go $B/go/greet-go1.15 main.Greet --ret -- $B/go/greet-go1.15 1 5

step "Go, stripped (-ldflags='-s -w'): functions from the pclntab, types from a signature" \
     "utrace go $B/go/greet-stripped 'main.Greet(name string, n int) (string, error)' --ret -- ..."
$U list $B/go/greet-stripped 'main.*'
$U go $B/go/greet-stripped 'main.Greet(name string, n int) (string, error)' --ret -- $B/go/greet-stripped 1 5

step "Counted in the kernel: calls and a latency histogram of a recursive Go function (returns without uretprobes)" \
     "utrace go $B/go/greet main.Fib --hist -- $B/go/greet 1 12"
$U go $B/go/greet main.Fib --hist -- $B/go/greet 1 12

step "User stacks: a recursive C++ template, demangled" \
     "utrace native $B/cpp/stack leaf_work --stack -n 1 -- $B/cpp/stack 1 3"
$U native $B/cpp/stack leaf_work --stack -n 1 -- $B/cpp/stack 1 3

step "User stacks through JIT code: node's own perf map names the JavaScript frames" \
     "utrace node uv_fs_open --stack -n 1 -- node --perf-basic-prof --interpreted-frames-native-stack fixtures/node/fsops.js --files 1"
ntmp=$(mktemp -d)
(cd "$ntmp" && "$OLDPWD/$U" node uv_fs_open --stack -n 1 -- node --perf-basic-prof --interpreted-frames-native-stack \
    "$OLDPWD/fixtures/node/fsops.js" --files 1 | cut -c1-150) || true
rm -rf "$ntmp" /tmp/perf-*.map

step "A trace for Perfetto / chrome://tracing: every Fib call as a slice" \
     "utrace go $B/go/greet main.Fib --ret --format perfetto -o fib.json -- $B/go/greet 1 5"
ptmp=$(mktemp -d)
$U go $B/go/greet main.Fib --ret --format perfetto -o "$ptmp/fib.json" -- $B/go/greet 1 5 >/dev/null
echo "$(grep -c '"ph":"X"' "$ptmp/fib.json") slices in $ptmp/fib.json (open it in https://ui.perfetto.dev)"
rm -rf "$ptmp"
