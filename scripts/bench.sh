#!/usr/bin/env bash
# The benchmarks, from a clean checkout on Debian with the Rust toolchain
# and python3: installs the third-party Blossom server (blossom-server
# 0.5.6, built once per machine), python-blossom 1.1.0 into a virtualenv and,
# if node is installed, blossom-client-sdk 5.1.0 with npm, then runs
# benches/replicate against them and prints a table of ratios.
#
#   scripts/bench.sh            everything, as BENCHMARKS.md reports it
#   scripts/bench.sh --quick    smaller sizes and fewer repeats
#   scripts/bench.sh --only bulk,queue
#
# Scenarios: queue, rate, fanout, bulk, large. The full run needs about
# 6 GiB of free space under $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}/blossom-replicator"

BLOSSOM_SERVER_BIN="$(scripts/install-blossom-server.sh)"
export BLOSSOM_SERVER_BIN
echo "using $("$BLOSSOM_SERVER_BIN" --version)"

python_blossom=1.1.0
venv="$cache/bench-venv"
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('python-blossom') != '$python_blossom')" 2>/dev/null; then
    echo "installing python-blossom $python_blossom into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "python-blossom==$python_blossom"
fi
export BENCH_PYTHON="$venv/bin/python"
echo "using python-blossom $python_blossom ($("$BENCH_PYTHON" --version))"

# blossom-client-sdk is optional: without node (or a node too old for it),
# its rows are left out and the rest runs. nostr-tools signs its tokens and
# undici gives each repeat its own connection pool.
blossom_client_sdk=5.1.0
nostr_tools=2.25.2
undici=6.24.1
node_prefix="$cache/bench-node"
node_ready() {
    (cd "$node_prefix" 2>/dev/null && node --input-type=module -e "
        import { readFileSync } from 'node:fs';
        await import('blossom-client-sdk'); await import('nostr-tools/pure'); await import('undici');
        const version = (name) => JSON.parse(readFileSync('node_modules/' + name + '/package.json')).version;
        process.exit(version('blossom-client-sdk') === '$blossom_client_sdk'
            && version('nostr-tools') === '$nostr_tools' && version('undici') === '$undici' ? 0 : 1);
    ") >/dev/null 2>&1
}
if ! command -v node >/dev/null; then
    echo "node is not installed: skipping blossom-client-sdk"
else
    if ! node_ready; then
        echo "installing blossom-client-sdk $blossom_client_sdk into $node_prefix"
        mkdir -p "$node_prefix"
        npm install --prefix "$node_prefix" --save-exact --no-audit --no-fund --loglevel=error \
            "blossom-client-sdk@$blossom_client_sdk" "nostr-tools@$nostr_tools" "undici@$undici" \
            >/dev/null || true
    fi
    if node_ready; then
        export BENCH_NODE BENCH_NODE_MODULES
        BENCH_NODE="$(command -v node)"
        BENCH_NODE_MODULES="$node_prefix/node_modules"
        echo "using blossom-client-sdk $blossom_client_sdk (node $(node --version))"
    else
        echo "blossom-client-sdk $blossom_client_sdk does not load under node $(node --version): skipping it"
    fi
fi

# Peak memory is read by /usr/bin/time, which a slim Debian lacks.
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time
fi
for tool in curl sha256sum; do
    command -v "$tool" >/dev/null || { echo "bench.sh needs $tool" >&2; exit 1; }
done

# Its own target directory: a bench build does not disturb test builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/bench-target}"
cargo bench --locked --bench replicate --no-run
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(uname -sr)"
cargo bench --locked --bench replicate -- "$@"
