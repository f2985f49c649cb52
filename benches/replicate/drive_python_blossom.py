"""Drives python-blossom for the benchmarks: uploads blobs to every server
with BlossomClient.upload_to_all (sync, one server after another) or
AsyncBlossomClient.upload_to_all (all servers at once, `concurrency` blobs
in flight), and prints what it measured as one JSON line.

Only the uploads are timed: blobs are made and the interpreter is started
before the clock runs. Every repeat gets a new client, so no repeat reuses
another's connections, and new bytes, so no server already holds them.
"""

import asyncio
import hashlib
import json
import os
import resource
import sys
import time

from python_blossom import AsyncBlossomClient, BlossomClient

MIME = "application/octet-stream"


def count_ok(results, digest):
    ok = errors = 0
    for result in results.values():
        if "error" in result or result.get("sha256") != digest:
            errors += 1
        else:
            ok += 1
    return ok, errors


def run_sync(args, blobs):
    ok = errors = 0
    with BlossomClient(nsec=args["secret"], default_servers=args["servers"]) as client:
        start = time.perf_counter()
        for data, digest in blobs:
            if data is None:
                results = client.upload_to_all(file_path=args["file"], mime_type=MIME)
            else:
                results = client.upload_to_all(data=data, mime_type=MIME)
            good, bad = count_ok(results, digest)
            ok, errors = ok + good, errors + bad
        elapsed = time.perf_counter() - start
    return elapsed, ok, errors


async def run_async(args, blobs):
    totals = {"ok": 0, "errors": 0}
    in_flight = asyncio.Semaphore(args.get("concurrency", 1))
    async with AsyncBlossomClient(nsec=args["secret"], default_servers=args["servers"]) as client:

        async def one(data, digest):
            async with in_flight:
                if data is None:
                    results = await client.upload_to_all(file_path=args["file"], mime_type=MIME)
                else:
                    results = await client.upload_to_all(data=data, mime_type=MIME)
            good, bad = count_ok(results, digest)
            totals["ok"] += good
            totals["errors"] += bad

        start = time.perf_counter()
        await asyncio.gather(*(one(data, digest) for data, digest in blobs))
        elapsed = time.perf_counter() - start
    return elapsed, totals["ok"], totals["errors"]


def make_blobs(args):
    if args.get("file"):
        # The client reads the file itself, as a user would have it do.
        return [(None, args["sha256"])]
    blobs = []
    for _ in range(args["count"]):
        data = os.urandom(args["size"])
        blobs.append((data, hashlib.sha256(data).hexdigest()))
    return blobs


def main():
    args = json.loads(sys.argv[1])
    times, ok, errors = [], 0, 0
    for _ in range(args.get("repeats", 1)):
        blobs = make_blobs(args)
        if args["client"] == "sync":
            elapsed, good, bad = run_sync(args, blobs)
        else:
            elapsed, good, bad = asyncio.run(run_async(args, blobs))
        del blobs
        times.append(elapsed)
        ok, errors = ok + good, errors + bad
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"times": times, "ok": ok, "errors": errors, "peak_rss": peak_kib * 1024}))


if __name__ == "__main__":
    main()
