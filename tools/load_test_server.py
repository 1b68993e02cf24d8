"""Bounded load test of ldm-serve, on localhost only: CLIENTS threads x REQUESTS txt2img each
against a real server; every request must be answered (200, or 503 with Retry-After), none
lost; one client drops its connection mid-job and the worker must not mind; the server's
memory must stay flat.

    python tools/load_test_server.py                       # the built-in demo model
    python tools/load_test_server.py --model runs/m --clients 16 --requests 4 --steps 10
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time

import httpx

from ldm.server.process import ServerProcess


def client(url: str, requests: int, steps: int, counts: collections.Counter, lock: threading.Lock) -> None:
    for k in range(requests):
        try:
            answer = httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": f"a red circle {k}", "steps": steps}, timeout=600)
            outcome = str(answer.status_code)
            if answer.status_code == 503 and "Retry-After" not in answer.headers:
                outcome = "503 without Retry-After"
            elif answer.status_code == 200 and len(answer.json()["images"]) != 1:
                outcome = "200 without its image"
        except httpx.HTTPError as error:
            outcome = f"lost ({type(error).__name__})"
        with lock:
            counts[outcome] += 1


def drop_mid_job(url: str, steps: int) -> str:
    """A client that gives up while its job runs (a read timeout closes the connection)."""
    try:
        httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "dropped", "steps": steps * 4}, timeout=0.5)
    except httpx.ReadTimeout:
        return "dropped"
    return "finished before the drop"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the built-in demo model)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="per client")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max-queue", type=int, default=8)
    args = parser.parse_args()
    extra = ["--model", args.model] if args.model else []
    with ServerProcess(*extra, "--max-queue", args.max_queue, "--device", "cpu", "--no-compile") as server:
        url = server.url
        httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "warm up", "steps": args.steps}, timeout=600)
        rss_before = server.rss_bytes()
        print(f"dropping a client mid-job: {drop_mid_job(url, args.steps)}", file=sys.stderr)
        counts, lock = collections.Counter(), threading.Lock()
        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(url, args.requests, args.steps, counts, lock)) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
        after = httpx.post(url + "/sdapi/v1/txt2img", json={"prompt": "after", "steps": args.steps}, timeout=600)
        rss_after = server.rss_bytes()
    total = args.clients * args.requests
    answered = counts["200"] + counts["503"]
    print(f"{total} requests in {seconds:.1f} s: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    print(f"server memory {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB after; "
          f"a request after the load: {after.status_code}")  # fmt: skip
    ok = answered == total and after.status_code == 200 and rss_after < rss_before * 1.5
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
