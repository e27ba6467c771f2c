"""Phloem under a huge answer: the server's memory and its /healthz latency while one request asks for 100M rows.

    python bench/memory.py

1. creates a small demo shop in a work folder (`semantic.demo.create`, the data does not matter: the large answers
   are `generate_series` in the SQL door's outer step);
2. starts the real server as a subprocess (`python -m server.cli serve <dir> --port <free> --pg-port 0`), once
   with the default limits and once with `--max-rows 0 --max-bytes 0` (no limits);
3. for each case sends one `POST /api/v1/sql` with curl (its own process) reading the answer to /dev/null,
   while one thread samples the server's VmRSS (/proc/PID/status) every 10 ms and another polls GET /healthz
   every 20 ms on its own connection;
4. prints a table and writes bench/results/memory.json: RSS before the request, the peak during it, the growth,
   the worst and median /healthz latency, the status, bytes and seconds of the answer.

Cases: the 100M-row request that once took a server from 1 GB to 19.6 GB (default limits: refused with 400);
the same request as CSV with no limits (streamed whole, `--full` only: ~1 GB of CSV); a 10M-row CSV with no limits
(streamed). The exit status is 1 if a case's RSS grew by 500 MB or more or /healthz ever took 100 ms or more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `python bench/memory.py` from a checkout, installed or not
    sys.path.insert(0, str(ROOT))

HUGE = "SELECT * FROM generate_series(1, 100000000)"
TEN_MILLION = "SELECT * FROM generate_series(1, 10000000)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """`phloem serve` in a subprocess on a free loopback port."""

    def __init__(self, project: Path, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHLOEM_MAX_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", str(project), "--host", "127.0.0.1", "--port",
             str(self.port), "--pg-port", "0", *options], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server exited: " + self.process.stderr.read().decode()[-2000:])
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def measure(server: Server, sql: str, accept: str) -> dict:
    """One request read to its end while RSS and /healthz are sampled."""
    pid = server.process.pid
    with httpx.Client(base_url=server.url, timeout=10) as warm:  # the doors' first-use work is not the answer's
        warm.post("/api/v1/sql", json={"sql": "SELECT * FROM generate_series(1, 10)"}).raise_for_status()
    time.sleep(0.5)
    before = rss_mb(pid)
    done = threading.Event()
    peak, latencies = [before], []

    def sample_rss():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.01)

    def poll_health():
        with httpx.Client(base_url=server.url, timeout=10) as health:
            while not done.is_set():
                started = time.perf_counter()
                health.get("/healthz").raise_for_status()
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    threads = [threading.Thread(target=sample_rss), threading.Thread(target=poll_health)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    started = time.perf_counter()
    # curl in its own process reads the answer: a client in this process would take the GIL from the poller
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", "-H",
                          "content-type: application/json", "-H", f"accept: {accept}", "--data-binary",
                          json.dumps({"sql": sql}), server.url + "/api/v1/sql"],
                         capture_output=True, text=True, timeout=600).stdout.split()
    status, size = int(out[0]), int(out[1])
    seconds = time.perf_counter() - started
    time.sleep(0.2)
    done.set()
    for t in threads:
        t.join()
    body = httpx.post(server.url + "/api/v1/sql", json={"sql": sql}).content if status != 200 else b""
    return {
        "status": status, "bytes": size, "seconds": round(seconds, 2),
        "rss_before_mb": round(before, 1), "rss_peak_mb": round(peak[0], 1),
        "rss_growth_mb": round(peak[0] - before, 1),
        "healthz_polls": len(latencies), "healthz_worst_ms": round(max(latencies) * 1000, 1),
        "healthz_median_ms": round(statistics.median(latencies) * 1000, 2),
        "answer_start": body[:200].decode(errors="replace") if status != 200 else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also stream the 100M rows whole, with no limits")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memory.json")
    args = parser.parse_args()

    from semantic.demo import create

    cases = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="phloem-memory-") as work:
        project = Path(work) / "shop"
        create(project, scale=1000)
        with Server(project) as server:
            cases.append(("100M rows, JSON, default limits", measure(server, HUGE, "application/json")))
        with Server(project, "--max-rows", "0", "--max-bytes", "0") as server:
            cases.append(("10M rows, CSV, no limits", measure(server, TEN_MILLION, "text/csv")))
            if args.full:
                cases.append(("100M rows, CSV, no limits", measure(server, HUGE, "text/csv")))

    print(f"{'case':36} {'status':>6} {'MB sent':>8} {'s':>6} {'RSS before':>10} {'peak':>7} {'growth':>7} "
          f"{'healthz worst':>13} {'median':>7}")
    for name, c in cases:
        print(f"{name:36} {c['status']:>6} {c['bytes'] / 2**20:>8.1f} {c['seconds']:>6.1f} {c['rss_before_mb']:>10.0f} "
              f"{c['rss_peak_mb']:>7.0f} {c['rss_growth_mb']:>7.0f} {c['healthz_worst_ms']:>10.1f} ms "
              f"{c['healthz_median_ms']:>5.1f}")
        if c["answer_start"]:
            print("   ", c["answer_start"])
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    print(f"load average (1, 5, 15 min): before {load['before']}, after {load['after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": load,
        "cases": dict(cases)}, indent=2) + "\n")
    bad = [n for n, c in cases if c["rss_growth_mb"] >= 500 or c["healthz_worst_ms"] >= 100]
    for name in bad:
        print(f"!!! {name}: over 500 MB of growth or a /healthz of 100 ms or more")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
