#!/usr/bin/env bash
# fetch-postgres.sh: Debian bookworm's PostgreSQL 15 server and client (built --enable-dtrace: USDT
# probes in .note.stapsdt) and the libraries they need, unpacked into a cache folder without
# installing anything. Prints the folder; run the programs from it as
#   LD_LIBRARY_PATH=ROOT/usr/lib/x86_64-linux-gnu ROOT/usr/lib/postgresql/15/bin/postgres ...
# (initdb finds postgres next to itself; the server finds its share/ through its own path).
# libllvm14 (70 MB) is left out: only llvmjit.so needs it, and the tests run with jit=off.
set -euo pipefail
dest=${UTRACE_CACHE:-$HOME/.cache/utrace}/realworld/postgresql
root=$dest/root
bin=$root/usr/lib/postgresql/15/bin
if [ -x "$bin/postgres" ] && [ -x "$bin/psql" ] && [ -e "$dest/.complete" ]; then
  echo "$root"; exit 0
fi
mkdir -p "$dest/debs"
cd "$dest/debs"
chmod 777 "$dest/debs"  # apt's sandbox user downloads here
pkgs=(postgresql-15 postgresql-client-15 libpq5 libicu72 libxml2 libxslt1.1 liblz4-1 libzstd1 libldap-2.5-0
      libsasl2-2 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libssl3 libsystemd0
      libgcrypt20 libgpg-error0 liblzma5 libcap2 libuuid1 libpam0g libselinux1 libpcre2-8-0 zlib1g
      libreadline8 libtinfo6 libaudit1 libcap-ng0 libcom-err2 libgnutls30 libhogweed6 libnettle8 libgmp10
      libidn2-0 libunistring2 libp11-kit0 libtasn1-6 libffi8)
for p in "${pkgs[@]}"; do
  ls ./"${p}"_*.deb >/dev/null 2>&1 && continue
  apt-get download -q "$p" >/dev/null 2>&1 || apt-get download "$p"
done
rm -rf "$root.tmp" && mkdir -p "$root.tmp"
for d in ./*.deb; do dpkg -x "$d" "$root.tmp"; done
tmpbin=$root.tmp/usr/lib/postgresql/15/bin
# the tests trace USDT probes: a build without them is not what this script is for
notes=$(readelf -n "$tmpbin/postgres")  # (not piped into grep -q: pipefail would see readelf's SIGPIPE)
if [[ $notes != *"Provider: postgresql"* ]]; then
  echo "fetch-postgres: $tmpbin/postgres has no postgresql USDT probes" >&2; exit 1
fi
# every library the server and psql need must come from the extraction or the base system
missing=$(LD_LIBRARY_PATH=$root.tmp/usr/lib/x86_64-linux-gnu:$root.tmp/lib/x86_64-linux-gnu \
          ldd "$tmpbin/postgres" "$tmpbin/psql" "$tmpbin/initdb" | grep 'not found' || true)
if [ -n "$missing" ]; then
  echo "fetch-postgres: libraries not found: $missing" >&2; exit 1
fi
# Debian keeps the server's libraries under lib/x86_64-linux-gnu too (usrmerge): one folder for both
if [ -d "$root.tmp/lib/x86_64-linux-gnu" ]; then
  cp -an "$root.tmp/lib/x86_64-linux-gnu/." "$root.tmp/usr/lib/x86_64-linux-gnu/"
fi
rm -rf "$root" && mv "$root.tmp" "$root"
touch "$dest/.complete"
echo "$root"
