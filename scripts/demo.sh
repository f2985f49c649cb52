#!/usr/bin/env bash
# The main job on an example, from a clean checkout on Debian with the Rust
# toolchain: installs blossom-replicator and the third-party Blossom server
# (blossom-server 0.5.6, built once per machine), starts three servers on
# 127.0.0.1, pushes the real files under /usr/share/common-licenses and
# /usr/share/doc to all three, and checks every blob on every server by
# downloading it and hashing the bytes.
#
# Everything it writes goes under $DEMO_DIR (default: a new temporary
# directory); the servers are stopped when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

server_bin="$(scripts/install-blossom-server.sh)"
echo "== installing blossom-replicator"
# Release artefacts are kept beside the server cache, so a second demo run
# does not rebuild everything.
cargo install --locked --quiet --path . --root "${INSTALL_ROOT:-$HOME/.local}" \
    --target-dir "${XDG_CACHE_HOME:-$HOME/.cache}/blossom-replicator/demo-target"
replicator="${INSTALL_ROOT:-$HOME/.local}/bin/blossom-replicator"
"$replicator" --version

demo="${DEMO_DIR:-$(mktemp -d -t blossom-demo.XXXXXX)}"
mkdir -p "$demo"
echo "== working in $demo"

# A fresh identity for this demo; the servers accept uploads from it only.
rm -f "$demo/key.nsec"
pubkey="$("$replicator" keygen "$demo/key.nsec")"
export BLOSSOM_SECRET_KEY_FILE="$demo/key.nsec"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

urls=()
for name in a b c; do
    dir="$demo/server-$name"
    rm -rf "$dir" && mkdir -p "$dir"
    echo "$pubkey" > "$dir/whitelist.txt"
    port="$(free_port)"
    url="http://127.0.0.1:$port"
    (cd "$dir" && exec "$server_bin" --bind "127.0.0.1:$port" --base-url "$url" \
        --data-dir "$dir/blobs" --db-path "$dir/blossom.db" \
        --require-auth --no-rate-limit --whitelist "$dir/whitelist.txt" --no-relay \
        --nip34-lmdb-path "$dir/relay_db" --nip34-repos-path "$dir/repos" \
        --iroh-key-file "$dir/iroh.key" --body-limit 4294967296 >"$dir/server.log" 2>&1) &
    pids+=("$!")
    urls+=("$url")
done
for url in "${urls[@]}"; do
    for _ in $(seq 100); do
        python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/health')" "$url" 2>/dev/null && break
        sleep 0.1
    done
done
echo "== servers: ${urls[*]}"

config="$demo/config.toml"
{
    printf '[defaults]\nrate = 200.0\nburst = 50\nmax_in_flight = 8\n\n'
    for url in "${urls[@]}"; do printf '[[servers]]\nurl = "%s"\n\n' "$url"; done
} > "$config"

echo "== pushing /usr/share/common-licenses and /usr/share/doc"
status=0
RUST_LOG="${RUST_LOG:-warn}" "$replicator" --config "$config" --db "$demo/replicator.db" \
    push -r /usr/share/common-licenses /usr/share/doc || status=$?

echo "== checking every blob on every server (download and hash)"
"$replicator" --config "$config" --db "$demo/replicator.db" status --json > "$demo/status.json" || true
python3 - "$demo/status.json" "${urls[@]}" <<'PY'
import hashlib, json, sys, urllib.request
status, servers = json.load(open(sys.argv[1])), sys.argv[2:]
bad = checked = 0
for blob in status["blobs"]:
    for server in servers:
        digest, size = hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(f"{server}/{blob['sha256']}") as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    size += len(chunk)
        except Exception as error:
            print(f"missing: {blob['sha256']} on {server}: {error}")
            bad += 1
            continue
        checked += 1
        if digest.hexdigest() != blob["sha256"] or size != blob["size"]:
            print(f"wrong bytes: {blob['sha256']} on {server}")
            bad += 1
print(f"{len(status['blobs'])} blobs x {len(servers)} servers: {checked} copies verified, {bad} missing or wrong")
sys.exit(1 if bad else 0)
PY
echo "== done: push exited $status; state is in $demo/replicator.db (the servers' files too: rm -rf $demo when done)"
exit "$status"
