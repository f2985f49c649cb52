#!/usr/bin/env bash
# Installs the third-party Blossom server the tests and the demo run against
# (blossom-server 0.5.6 from crates.io) into a per-user cache keyed by version,
# so one machine builds it once. Prints the binary's path on stdout.
set -euo pipefail

version=0.5.6
root="${BLOSSOM_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/blossom-replicator}/blossom-server-$version"
bin="$root/bin/blossom-server"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
    echo "$bin"
    exit 0
fi

# bindgen inside the server's build needs libclang.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang-*.so.* 2>/dev/null | grep -qv cpp; then
    echo "installing libclang-dev (needed to build blossom-server)" >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >&2
fi

echo "building blossom-server $version into $root (once per machine, ~17 min on 2 cores)" >&2
tmp="$root.partial"
rm -rf "$tmp"
cargo install blossom-server --version "$version" --locked --root "$tmp" >&2
rm -rf "$root"
mv "$tmp" "$root"
echo "$bin"
