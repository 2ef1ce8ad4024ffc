# debian-fetch.sh -- sourced (not run) by the scripts/fetch-*.sh that take packages from the Debian archive
# without installing them: a PRIVATE apt sources list / state / cache (nothing under /etc/apt or
# /var/lib/apt is touched), `apt-get download`, and `dpkg -x` into a folder of the caller's.
#
# The caller sets FETCH_NAME (the prefix of its messages) before sourcing this file, then:
#
#   debian_once DONE_FN RESULT LOCKFILE   print RESULT and exit 0 if DONE_FN says the work is done, else take
#                                         LOCKFILE (concurrent runs wait) and check again
#   debian_download PARENT SUITE PKG...   private apt state in a new $WORK under PARENT (removed on exit),
#                                         PKGs of SUITE unpacked into $WORK/root; sets MIRROR and SIGNED
#   debian_stamp [KEY=VALUE...]           the lines of a completion stamp: suite, mirror, signature, the
#                                         caller's lines, and one deb= line per package file
#
# Environment: UTRACE_DEBIAN_MIRROR (default: the machine's own Debian URI, else
# http://deb.debian.org/debian), UTRACE_DEBIAN_KEYRING (default
# /usr/share/keyrings/debian-archive-keyring.gpg), UTRACE_APT_ETC (only for testing the mirror parser).

log() { printf '%s: %s\n' "$FETCH_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

debian_once() {   # DONE_FN RESULT LOCKFILE
    if "$1"; then printf '%s\n' "$2"; exit 0; fi
    local tool
    for tool in apt-get dpkg; do command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"; done
    mkdir -p "$(dirname "$3")"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$3"
        flock 9
        if "$1"; then printf '%s\n' "$2"; exit 0; fi
    fi
    return 0
}

# Which Debian mirror does this machine use? A URI whose path ends in /debian (not debian-security, not
# snapshot.debian.org time-stamped URLs, not third-party repos), from one-line *.list files and deb822
# *.sources files (what apt itself reads; *.disabled etc. are ignored).
debian_detect_mirror() {
    local etc=${UTRACE_APT_ETC:-/etc/apt} files=() f
    [ -f "$etc/sources.list" ] && files+=("$etc/sources.list")
    for f in "$etc"/sources.list.d/*.list "$etc"/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    {
        for f in "${files[@]}"; do
            case "$f" in
                *.sources)
                    # deb822: "URIs: a b c" (only stanzas whose Types include deb)
                    awk '
                        /^[[:space:]]*#/ { next }
                        /^[[:space:]]*$/ { if (isdeb) for (i in u) print u[i]; delete u; isdeb=0; n=0; next }
                        tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb=1 }
                        tolower($1) == "uris:"  { for (i = 2; i <= NF; i++) u[n++] = $i }
                        tolower($1) == "enabled:" && tolower($2) == "no" { isdeb=0; delete u }
                        END { if (isdeb) for (i in u) print u[i] }
                    ' "$f" ;;
                *)
                    # one-line: deb [opts] URI suite comp...
                    awk '
                        $1 == "deb" {
                            i = 2
                            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                            if (i <= NF) print $i
                        }
                    ' "$f" ;;
            esac
        done
    } | grep -E '^(https?|ftp)://[^ ]+/debian/?$' | grep -v -- '-security' | head -n1 | sed 's:/*$::'
}

_debian_sources() {   # apt source options ("" for none)
    printf 'deb %s%s %s main\n' "${1:+[$1] }" "$MIRROR" "$SUITE" >"$WORK/sources.list"
}

_debian_update() {
    rm -rf "$WORK/lists"; mkdir -p "$WORK/lists/partial"
    apt-get "${APT_OPTS[@]}" update >&2 || return 1
    # apt-get update exits 0 when the mirror cannot be reached at all: require an index.
    ls "$WORK"/lists/*_Packages* >/dev/null 2>&1
}

debian_download() {   # PARENT SUITE PKG...
    local parent=$1 deb keyring
    SUITE=$2
    shift 2
    MIRROR=${UTRACE_DEBIAN_MIRROR:-}
    [ -n "$MIRROR" ] || MIRROR=$(debian_detect_mirror || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    keyring=${UTRACE_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
    log "$SUITE from $MIRROR: $*"

    mkdir -p "$parent"
    WORK=$(mktemp -d "$parent/.$FETCH_NAME.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
    mkdir -p "$WORK/cache/archives/partial" "$WORK/debs" "$WORK/root"
    APT_OPTS=(
        -o "Dir::Etc::sourcelist=$WORK/sources.list" -o "Dir::Etc::sourceparts=-"
        -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache"
        -o "Dir::Cache::archives=$WORK/cache/archives" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
        -o "Acquire::Languages=none" -o "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false"
        -o "Debug::NoLocking=1" -q
    )
    # As root apt drops to the _apt user for downloads, which cannot write our private dirs.
    [ "$(id -u)" -ne 0 ] || APT_OPTS+=(-o "APT::Sandbox::User=root")

    SIGNED=yes
    if [ -r "$keyring" ]; then _debian_sources "signed-by=$keyring"; else _debian_sources ""; fi
    if ! _debian_update; then
        case "$SUITE" in
            trixie | trixie-backports | forky | sid)
                # Suites newer than bookworm are signed with keys newer than the ones some bookworm keyrings
                # ship (debian-archive-keyring < 2023.3+deb12u2): for these only, fall back to an unverified
                # download; the older suites always require a valid signature.
                log "WARNING: signature check for $SUITE failed; retrying with [trusted=yes] (unverified)"
                SIGNED=no
                _debian_sources "trusted=yes"
                _debian_update || die "could not fetch the $SUITE package index from $MIRROR (network? mirror?)" ;;
            *) die "could not fetch the $SUITE package index from $MIRROR (see above)" ;;
        esac
    fi
    (cd "$WORK/debs" && apt-get "${APT_OPTS[@]}" download "$@" >&2) || die "apt-get download $* failed"
    for deb in "$WORK"/debs/*.deb; do
        [ -f "$deb" ] || die "no .deb downloaded"
        log "unpacking $(basename "$deb")"
        dpkg -x "$deb" "$WORK/root"
    done
}

debian_stamp() {   # KEY=VALUE...
    printf 'suite=%s\nmirror=%s\nsigned=%s\n' "$SUITE" "$MIRROR" "$SIGNED"
    [ $# -eq 0 ] || printf '%s\n' "$@"
    ls "$WORK"/debs/*.deb | xargs -n1 basename | sed 's/^/deb=/'
}
