"""Starts one bench worker as its own child and reports that child's resource usage.

    python -S launcher.py REPORT_JSON TIMEOUT_S WORKER_ARGV...

Why not start the worker from the harness directly: Linux carries a process's peak RSS across
``exec`` (the kernel folds the pre-exec address space's high-water mark into ``ru_maxrss``), and
``subprocess`` starts children with vfork, whose pre-exec address space IS the parent's. So a worker
started by a harness that holds 2 GB (it just exported a synthetic opus-mt model with torch) reports
>= 2 GB, whatever it really used. This launcher is a bare interpreter (``-S``, stdlib only, run as a
file so no package is imported): it forks the worker from a few MB, and its ``wait4`` of the exited
worker gives the worker's own peak — still the kernel's accounting, never a sampler that can miss a
peak, and still known when the worker crashed or was killed.

The launcher kills the worker on TIMEOUT_S (0: none) or when it gets SIGTERM/SIGINT (the harness's
Ctrl-C), and always writes REPORT_JSON: exit code, peak RSS in KiB, CPU seconds, and why it ended.
"""

import json
import os
import signal
import sys
import time

POLL_S = 0.05


def main() -> int:
    report_path, timeout_s, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    start, killed_for = time.monotonic(), None
    while True:
        try:
            done, status, usage = os.wait4(pid, os.WNOHANG)
        except InterruptedError:
            continue
        if done:
            break
        if killed_for is None and (stop or (timeout_s and time.monotonic() - start > timeout_s)):
            killed_for = "interrupted" if stop else "timeout"
            os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_S)
    report = {"exit_code": os.waitstatus_to_exitcode(status), "max_rss_kib": usage.ru_maxrss,
              "user_s": usage.ru_utime, "system_s": usage.ru_stime, "wall_s": time.monotonic() - start,
              "killed_for": killed_for}
    tmp = report_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(report, fh)
    os.replace(tmp, report_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
