"""Runs one bench worker to completion, within its limits, and says how it ended.

The worker is started through ``mtedge.bench.launcher`` (a bare interpreter that forks it), which enforces
the timeout, kills it on Ctrl-C, and reports its exit code and peak RSS from ``os.wait4`` — free of this
process's own peak (see launcher.py). The memory cap is set by the worker itself from its spec.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STDERR_TAIL_CHARS = 2000
LAUNCHER = Path(__file__).with_name("launcher.py")


@dataclass
class WorkerOutcome:
    result: dict | None
    exit_code: int
    peak_rss_mb: float | None
    wall_s: float
    stderr_tail: str
    timed_out: bool = False


def run_worker(spec: dict, log_dir: Path, timeout_s: float | None = None,
               module: str = "mtedge.bench.worker") -> WorkerOutcome:
    """Runs one worker to completion through ``mtedge.bench.launcher``; its peak RSS is the kernel's
    accounting of the exited worker (``wait4`` ``ru_maxrss``, KiB on Linux), taken by the launcher —
    a direct child of this process would carry this process's own peak (see launcher.py). ``module``: the
    worker's entry point (``mtedge.bench.paired`` for a pair measured in one process)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    name = spec.get("label") or spec["config"]["name"]   # the config, and its round where there are several
    result_path = Path(spec["result_path"])
    usage_path = result_path.with_name(f"{name}.usage.json")
    for path in (result_path, usage_path):
        path.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    argv = [sys.executable, "-S", str(LAUNCHER), str(usage_path), str(timeout_s or 0),
            sys.executable, "-m", module, json.dumps(spec)]
    start = time.perf_counter()
    with open(log_dir / f"{name}.stdout", "wb") as out, open(log_dir / f"{name}.stderr", "wb") as err:
        # a session of its own: a terminal's Ctrl-C reaches this process only, which then stops the
        # launcher, which kills the worker and still reports what it used
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                time.sleep(0.05)
        except BaseException:       # Ctrl-C: never leave a worker behind
            _reap(proc)
            raise
    wall = time.perf_counter() - start
    stderr_text = (log_dir / f"{name}.stderr").read_text(encoding="utf-8", errors="replace")
    usage = json.loads(usage_path.read_text(encoding="utf-8")) if usage_path.exists() else None
    if usage is None:               # the launcher itself died: nothing trustworthy to report
        return WorkerOutcome(None, proc.returncode, None, wall,
                             (stderr_text or "the worker launcher failed")[-STDERR_TAIL_CHARS:])
    result = None
    if usage["exit_code"] == 0 and result_path.exists():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    return WorkerOutcome(result, usage["exit_code"], usage["max_rss_kib"] / 1024, wall,
                         stderr_text[-STDERR_TAIL_CHARS:], usage["killed_for"] == "timeout" and result is None)


def _reap(proc: subprocess.Popen) -> None:
    """Stops the launcher (it kills its worker first); the whole session if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:                            # whatever is left of its session (a worker the launcher lost)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def failure_message(outcome: WorkerOutcome, limit_mb: int | None = None,
                    timeout_s: float | None = None) -> str:
    """One line for the row of a worker that left no result."""
    if outcome.timed_out:
        return f"worker timed out: killed after {timeout_s:g} s (--timeout)"
    code = outcome.exit_code
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    if limit_mb:
        how += f", address space capped at {limit_mb} MB"
    lines = [line for line in outcome.stderr_tail.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    if code == 0:
        return "worker wrote no result"
    return f"worker failed ({how}): {last}"
