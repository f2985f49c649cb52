#!/usr/bin/env bash
# Everything CI runs, from a clean checkout on Debian with the Rust
# toolchain and python3: installs the third-party Blossom server and Nostr
# relay the integration tests run against (each once per machine, cached in
# ~/.cache), then checks formatting and lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

BLOSSOM_SERVER_BIN="$(scripts/install-blossom-server.sh)"
export BLOSSOM_SERVER_BIN
echo "using $("$BLOSSOM_SERVER_BIN" --version)"
NOSTR_RELAY_BIN="$(scripts/install-nostr-relay.sh)"
export NOSTR_RELAY_BIN
echo "using nostr-relay at $NOSTR_RELAY_BIN"

# In CI the checkout is fresh every run; keep build artefacts beside the
# server cache so a machine does not rebuild every dependency each time.
if [ "${CI:-}" = "true" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/blossom-replicator/ci-target"
fi

cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
# The library alone, as an embedder builds it (no clap, indicatif, anyhow).
cargo clippy --locked --lib --no-default-features -- -D warnings
# Every public item documented, every intra-doc link resolving.
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet
cargo test --locked --all-targets
cargo test --locked --doc
