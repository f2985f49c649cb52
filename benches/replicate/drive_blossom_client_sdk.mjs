// Drives blossom-client-sdk for the benchmarks: uploads blobs to every
// server with the SDK's multi-server helper, Actions.multiServerUpload
// (upload to the first server, then PUT /mirror to the others one after
// another), or with Actions.uploadBlob to each server under Promise.all
// (all servers at once), `concurrency` blobs in flight either way, and
// prints what it measured as one JSON line.
//
// Only the uploads are timed: blobs are made, and the modules loaded and
// warmed up, before the clock runs. Every repeat gets a new connection pool, so no repeat
// reuses another's connections, and new bytes, so no server already holds
// them.
//
// Run from a directory whose node_modules holds blossom-client-sdk,
// nostr-tools and undici; the one argument is the JSON the harness sends.

import { createHash, randomBytes } from "node:crypto";
import { openAsBlob } from "node:fs";
import { performance } from "node:perf_hooks";

import { Actions, createUploadAuth } from "blossom-client-sdk";
import { finalizeEvent } from "nostr-tools/pure";
import { hexToBytes } from "nostr-tools/utils";
import { Agent, getGlobalDispatcher, setGlobalDispatcher } from "undici";

const MIME = "application/octet-stream";

// multiServerUpload uses its mirror timeout (5 s by default) for the upload
// too; a large file on a busy machine takes longer than that.
const TIMEOUT_MS = 10 * 60 * 1000;

// Failures are counted; the first few are also printed, to stderr.
let reported = 0;
function report(server, error) {
    if (reported++ < 5) console.error(`${server}: ${error?.message ?? error}`);
}

// One repeat: every blob to every server, `concurrency` blobs at a time.
async function run(args, blobs, signer) {
    const onAuth = (_server, sha256, type) => createUploadAuth(signer, sha256, { type });
    let ok = 0;
    let errors = 0;

    async function one({ blob, digest }) {
        let descriptors;
        if (args.client === "multi") {
            // Servers the helper gave up on are missing from its result.
            // blossom-server answers the BUD-06 `HEAD /upload` with 405,
            // after which the SDK only sends auth it was told to send.
            const results = await Actions.multiServerUpload(args.servers, blob, {
                auth: true,
                onAuth,
                mirrorTimeout: TIMEOUT_MS,
                onError: (server, _sha256, _blob, error) => report(server, error),
            });
            descriptors = args.servers.map((server) => results.get(server));
        } else {
            // As the SDK's README uploads one blob to several servers: one
            // token for all of them, here sent to all at once.
            const auth = await createUploadAuth(signer, blob);
            const settled = await Promise.allSettled(
                args.servers.map((server) => Actions.uploadBlob(server, blob, { auth })),
            );
            descriptors = settled.map((result, i) => {
                if (result.status === "fulfilled") return result.value;
                report(args.servers[i], result.reason);
                return undefined;
            });
        }
        for (const descriptor of descriptors) {
            if (descriptor?.sha256 === digest) ok += 1;
            else errors += 1;
        }
    }

    const queue = blobs.values();
    async function worker() {
        for (const blob of queue) {
            try {
                await one(blob);
            } catch (error) {
                report("all servers", error);
                errors += args.servers.length;
            }
        }
    }

    const start = performance.now();
    await Promise.all(Array.from({ length: args.concurrency ?? 1 }, worker));
    const elapsed = (performance.now() - start) / 1000;
    return { elapsed, ok, errors };
}

async function makeBlobs(args) {
    if (args.file) {
        // A Blob backed by the file, as node hands files to web APIs; the
        // SDK reads it itself.
        return [{ blob: await openAsBlob(args.file, { type: MIME }), digest: args.sha256 }];
    }
    const blobs = [];
    for (let i = 0; i < args.count; i++) {
        const data = randomBytes(args.size);
        const digest = createHash("sha256").update(data).digest("hex");
        blobs.push({ blob: new Blob([data], { type: MIME }), digest });
    }
    return blobs;
}

// Node loads fetch, WebCrypto and the signing code on first use: the part
// of its start that an import does in python. Nothing reaches a server.
async function warmUp(signer) {
    await (await fetch("data:,")).arrayBuffer();
    await crypto.subtle.digest("SHA-256", new Uint8Array(64));
    await signer({ kind: 24242, created_at: 0, tags: [], content: "" });
}

async function main() {
    const args = JSON.parse(process.argv[2]);
    const secret = hexToBytes(args.secret);
    const signer = async (draft) => finalizeEvent(draft, secret);
    await warmUp(signer);
    const times = [];
    let ok = 0;
    let errors = 0;
    for (let i = 0; i < (args.repeats ?? 1); i++) {
        let blobs = await makeBlobs(args);
        const previous = getGlobalDispatcher();
        setGlobalDispatcher(new Agent());
        await previous.close();
        const result = await run(args, blobs, signer);
        blobs = null;
        times.push(result.elapsed);
        ok += result.ok;
        errors += result.errors;
    }
    const peakRss = process.resourceUsage().maxRSS * 1024;
    console.log(JSON.stringify({ times, ok, errors, peak_rss: peakRss }));
}

await main();
