#!/usr/bin/env bash
# fetch-debian-node.sh: Debian's own Node.js 18 (node + libnode.so.108, using the system libuv.so.1) and
# the JavaScript packages it loads from /usr/share/nodejs, unpacked into a cache folder without
# installing them: the machine's own node (NodeSource 20) stays untouched. Prints the folder.
# Run it with:  unshare -m sh -c 'mkdir -p /usr/share/nodejs; mount --bind ROOT/usr/share/nodejs \
#                 /usr/share/nodejs; LD_LIBRARY_PATH=ROOT/usr/lib/x86_64-linux-gnu exec ROOT/usr/bin/node ...'
set -euo pipefail
dest=${UTRACE_CACHE:-$HOME/.cache/utrace}/debian-node
root=$dest/root
if [ -x "$root/usr/bin/node" ] && [ -e "$root/usr/lib/x86_64-linux-gnu/libnode.so.108" ] \
   && [ -e "$root/usr/share/nodejs/cjs-module-lexer" ]; then
  echo "$root"; exit 0
fi
mkdir -p "$dest/debs"
cd "$dest/debs"
# the Debian archive's 18.x, not the NodeSource candidate that may be installed
ver=$(apt-cache madison libnode108 | awk '{print $3}' | sort -V | tail -1)
[ -n "$ver" ] || { echo "fetch-debian-node: libnode108 not in the apt lists (run apt-get update)" >&2; exit 1; }
chmod 777 "$dest/debs"  # apt's sandbox user downloads here
apt-get download -q "nodejs=$ver" "libnode108=$ver" node-cjs-module-lexer node-acorn node-undici >/dev/null 2>&1 \
  || apt-get download "nodejs=$ver" "libnode108=$ver" node-cjs-module-lexer node-acorn node-undici
rm -rf "$root.tmp" && mkdir -p "$root.tmp"
for d in ./*.deb; do dpkg -x "$d" "$root.tmp"; done
rm -rf "$root" && mv "$root.tmp" "$root"
echo "$root"
