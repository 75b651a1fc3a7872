"""What cross-request batching buys `mtedge serve`: throughput and latency at 1..N concurrent clients.

    .venv/bin/python -m benchmarks.suites.serve_bench BUNDLE --texts benchmarks/corpora/data/bible/test.tsv \\
        --sentences 256 --concurrency 1,8,32 --threads 2 --out benchmarks/results/serve

For each server setting — ``batched`` (the defaults: merge what arrives within ``--batch-wait-ms``) and
``unbatched`` (``--batch-tokens 1``: no two requests fit one engine call, so every request is its own
call, as with a server without a batcher) — one ``mtedge serve`` subprocess is started, warmed up, and
each concurrency level C sends the same ``--sentences`` texts, one text per ``POST /translate``, from C
asyncio clients (httpx) that each send their share back to back. Recorded per level: wall time,
requests/s, sentences/s, request latency p50/p90/p99, and the server's own counters from
``GET /metrics`` (engine calls, merged batches): the proof of merging is engine calls < requests.

``--texts``: a text file, one sentence per line, or a TSV whose first column is the source.
Writes ``report.json`` (machine incl. load average, settings, every latency) and ``report.md``.
Timings on a shared machine swing a lot: keep the machine header with any figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.suites.reports import write_report
from mtedge.bench.machine import describe_machine

SETTINGS = {"batched": [], "unbatched": ["--batch-tokens", "1"]}


def read_texts(path: Path, limit: int) -> list[str]:
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("\t", 1)[0].strip()
        if text:
            texts.append(text)
        if len(texts) == limit:
            break
    if not texts:
        sys.exit(f"error: no texts in {path}")
    return texts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, bundle: Path, args: argparse.Namespace, extra: list[str], log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "mtedge.cli", "serve", str(bundle), "--port", str(self.port),
                   "--engine", args.engine, "--threads", str(args.threads), "--batch-wait-ms", str(args.batch_wait_ms),
                   "--max-queue", "100000", "--char-limit", "-1", "--log-level", "warning", *extra]
        if args.precision:
            command += ["--precision", args.precision]
        self.command = command
        self.log = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        from mtedge.server.ready import wait_until_ready

        problem = wait_until_ready(self.url, self.proc, timeout)
        if problem:
            self.stop()
            sys.exit(f"error: {problem}; see {self.log.name}")

    def metrics(self) -> dict:
        return httpx.get(self.url + "/metrics", timeout=30).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def drive(url: str, texts: list[str], clients: int, source: str, target: str) -> tuple[float, list[float], int]:
    """(wall seconds, per-request latencies, errors) for ``texts`` sent by ``clients`` concurrent clients."""
    shares = [texts[i::clients] for i in range(clients)]
    latencies: list[float] = []
    errors = 0

    async def client(share: list[str], http: httpx.AsyncClient) -> None:
        nonlocal errors
        for text in share:
            start = time.perf_counter()
            response = await http.post("/translate", json={"q": text, "source": source, "target": target})
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(share, http) for share in shares if share))
        return time.perf_counter() - start, latencies, errors


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict:
    texts = read_texts(args.texts, args.sentences)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    rows = []
    for name in args.settings:
        server = Server(args.bundle, args, SETTINGS[name], args.out / f"server-{name}.log")
        try:
            server.wait_ready()
            languages = httpx.get(server.url + "/languages", timeout=10).json()
            source, target = languages[0]["code"], languages[0]["targets"][0]
            asyncio.run(drive(server.url, texts[:min(8, len(texts))], 1, source, target))  # warm-up
            for clients in args.concurrency:
                before = server.metrics()
                wall, latencies, errors = asyncio.run(drive(server.url, texts, clients, source, target))
                after = server.metrics()
                row = {
                    "setting": name, "clients": clients, "requests": len(texts), "errors": errors,
                    "wall_s": round(wall, 3), "requests_per_s": round(len(texts) / wall, 2),
                    "latency_ms": {"p50": round(1000 * _percentile(latencies, 0.5), 1),
                                   "p90": round(1000 * _percentile(latencies, 0.9), 1),
                                   "p99": round(1000 * _percentile(latencies, 0.99), 1),
                                   "mean": round(1000 * statistics.fmean(latencies), 1)},
                    "engine_calls": after["engine_calls"] - before["engine_calls"],
                    "batches": after["batches"] - before["batches"],
                    "merged_batches": after["merged_batches"] - before["merged_batches"],
                    "latencies_s": [round(v, 5) for v in latencies],
                }
                rows.append(row)
                print(f"{name:9s} clients={clients:3d}  {row['requests_per_s']:8.2f} req/s  "
                      f"p50 {row['latency_ms']['p50']:7.1f} ms  p99 {row['latency_ms']['p99']:7.1f} ms  "
                      f"engine calls {row['engine_calls']:4d} / {len(texts)} requests  errors {errors}", flush=True)
        finally:
            server.stop()
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    settings = {"bundle": str(args.bundle), "engine": args.engine, "precision": args.precision or "int8",
                "threads": args.threads, "batch_wait_ms": args.batch_wait_ms, "sentences": len(texts),
                "texts": str(args.texts), "concurrency": args.concurrency, "settings": args.settings,
                "note": args.note}
    report = {"machine": machine, "settings": settings, "rows": rows}
    write_report(args.out, report, markdown(report))
    return report


def markdown(report: dict) -> str:
    machine, settings = report["machine"], report["settings"]
    lines = [
        "# `mtedge serve`: cross-request batching",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores; load average at start "
        f"{machine['load_average']}, at end {machine.get('load_average_end')}.",
        f"Server: {settings['engine']} {settings['precision']}, {settings['threads']} thread(s), "
        f"batch wait {settings['batch_wait_ms']} ms; {settings['sentences']} texts from `{settings['texts']}`, "
        f"one per request. `unbatched` = `--batch-tokens 1` (every request its own engine call).",
    ]
    if settings.get("note"):
        lines += ["", f"**Note:** {settings['note']}"]
    lines += ["", "| setting | clients | req/s | p50 ms | p90 ms | p99 ms | engine calls | merged batches | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        latency = row["latency_ms"]
        lines.append(f"| {row['setting']} | {row['clients']} | {row['requests_per_s']} | {latency['p50']} | "
                     f"{latency['p90']} | {latency['p99']} | {row['engine_calls']} / {row['requests']} | "
                     f"{row['merged_batches']} | {row['errors']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--texts", type=Path, required=True)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--concurrency", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--settings", type=lambda s: s.split(","), default=list(SETTINGS))
    parser.add_argument("--engine", default="ct2")
    parser.add_argument("--precision", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--note", default="", help="Recorded with the result, e.g. what else ran on the machine.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tmp/serve"))
    args = parser.parse_args(argv)
    unknown = [s for s in args.settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown --settings {unknown}; choose from {', '.join(SETTINGS)}")
    run(args)


if __name__ == "__main__":
    main()
