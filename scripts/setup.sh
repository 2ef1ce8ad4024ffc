#!/usr/bin/env bash
# Idempotent set-up for utrace on Debian 12 as root: Debian packages, tracefs, the .venv with bcc
# importable, and (with --fixtures) the fixture toolchains and builds. Safe to run any number of times;
# a second run does no network access when everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
want_fixtures=0
for a in "$@"; do [ "$a" = "--fixtures" ] && want_fixtures=1; done
say() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages ---------------------------------------------------------------------------
pkgs=(bpfcc-tools python3-bpfcc libbpfcc linux-headers-amd64 golang-go default-jdk-headless
      systemtap-sdt-dev bpftrace python3-venv gcc g++ make binutils gdb
      libc-ares2 libbrotli1 libicu72 libnghttp2-14 libuv1  # Debian's node 18 fixture
      maven)  # a launcher script built by others (tests/e2e/test_jvm.py)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)  # installs the perfetto-export test oracle (tests/e2e/oracles)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${missing[*]} (run as root to install them)"; exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. tracefs (bcc writes to it when detaching; utrace also mounts it itself at run time) ---------
if [ ! -e /sys/kernel/tracing/uprobe_events ] && [ "$(id -u)" = 0 ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || say "could not mount tracefs"
fi

# 3. The venv: Debian's python3 (the interpreter python3-bpfcc is built for) ---------------------
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
scripts/lib/venv-bcc.sh .venv  # only the bcc package is made visible, not the whole of Debian's dist-packages
# "compat" editable mode is a plain path in a .pth file; the default import hook costs ~15 ms per start.
stamp=.venv/.installed-compat-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -e "$stamp" ]; then
  say "installing utrace and its Python dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[dev]'
  touch "$stamp"
fi
.venv/bin/python -c 'import bcc' || { say "bcc is not importable from .venv"; exit 1; }
# Bytecode up front (only what changed is compiled again): with PYTHONDONTWRITEBYTECODE set, as on
# these machines, every start would otherwise compile utrace's sources anew (about 40 ms of a start).
.venv/bin/python -m compileall -q utrace >/dev/null

# 3b. Test oracles from npm (tests/e2e/oracles): Chrome DevTools' trace engine reads the files that
# `--format perfetto` writes. Perfetto's own trace_processor_shell is downloaded by the `perfetto`
# package from get.perfetto.dev / commondatastorage.googleapis.com, which this network cannot reach.
oracles=tests/e2e/oracles
ostamp=$oracles/node_modules/.installed-$(cat $oracles/package.json $oracles/package-lock.json | sha1sum | cut -c1-12)
if [ ! -e "$ostamp" ]; then
  if command -v npm >/dev/null 2>&1; then
    say "installing test oracles into $oracles (npm ci)"
    if (cd "$oracles" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
      touch "$ostamp"
    else
      say "npm ci failed in $oracles: the perfetto export tests will be skipped (failed under CI=true)"
    fi
  else
    say "npm is missing: the perfetto export tests will be skipped (failed under CI=true)"
  fi
fi

# 4. Fixture toolchains and builds ---------------------------------------------------------------
if [ "$want_fixtures" = 1 ]; then
  # In CI a toolchain that cannot be had is a failure, not a silent skip.
  [ -n "${CI:-}" ] && export UTRACE_FIXTURES_STRICT=1
  scripts/fetch-go.sh 1.15 >/dev/null
  scripts/fetch-debian-node.sh >/dev/null
  scripts/fetch-debian-go-programs.sh >/dev/null
  scripts/fetch-postgres.sh >/dev/null
  scripts/fetch-debian-jdk.sh 21 26 >/dev/null
  scripts/fetch-node-official.sh 22 24 26 >/dev/null
  scripts/build-fixtures.sh fixtures/build
fi
say "ready"
