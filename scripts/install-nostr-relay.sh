#!/usr/bin/env bash
# Installs the third-party Nostr relay the BUD-03 tests run against
# (nostr-relay 1.14 from PyPI) into a virtual environment in a per-user
# cache keyed by version. Prints the relay command's path on stdout.
set -euo pipefail

version=1.14
root="${BLOSSOM_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blossom-replicator}/nostr-relay-$version"
bin="$root/bin/nostr-relay"
# Written last, so an install cut short is redone rather than trusted.
done_marker="$root/.installed"

if [ -x "$bin" ] && [ -f "$done_marker" ]; then
    echo "$bin"
    exit 0
fi

# A virtual environment records its own path in its scripts, so it is
# built where it will live rather than built aside and moved.
echo "installing nostr-relay $version into $root (once per machine, ~30 s)" >&2
rm -rf "$root"
python3 -m venv "$root" >&2
"$root/bin/pip" install --quiet --disable-pip-version-check "nostr-relay==$version" >&2
touch "$done_marker"
echo "$bin"
