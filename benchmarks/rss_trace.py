"""Resident memory of a command by phase: where a run's peak is.

    .venv/bin/python benchmarks/rss_trace.py -- .venv/bin/tailor run configs/dialogue/smollm2-chitchat.yaml --overwrite

Runs the command, samples its resident memory (/proc/PID/status VmRSS, the process itself: run tailor directly,
not under /usr/bin/time) every 0.2 s, and names each sample by the last line the command printed, cut at its first
':' (tqdm's "train:", "score base:", a validation's "step 50:"). Prints the command's output as it comes, then
the highest resident memory seen in each phase, in order, and the process's own peak (VmHWM) at its last sample.
Linux only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in MiB (empty once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return {k: int(v.split()[0]) // 1024 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
    except (FileNotFoundError, ProcessLookupError):
        return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=float, default=0.2, help="seconds between samples")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command after --")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    phase = ["start"]

    def read() -> None:  # tqdm redraws with \r: a phase is named by the latest line either way
        line = b""
        while chunk := proc.stdout.read(1):
            sys.stdout.buffer.write(chunk)
            if chunk in b"\r\n":
                text = line.decode(errors="replace").strip()
                if text:
                    phase[0] = text.split(":", 1)[0][:40]
                line = b""
                sys.stdout.flush()
            else:
                line += chunk

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peaks: dict[str, int] = {}
    hwm = 0
    while proc.poll() is None:
        s = status(proc.pid)
        if s:
            peaks[phase[0]] = max(peaks.get(phase[0], 0), s["VmRSS"])
            hwm = max(hwm, s["VmHWM"])
        time.sleep(args.every)
    reader.join(timeout=5)
    print(f"\nexit {proc.returncode}; resident memory by phase (MiB, the highest sample):")
    for name, mb in peaks.items():
        print(f"{mb:8d}  {name}")
    print(f"peak (VmHWM): {hwm} MiB")


if __name__ == "__main__":
    main()
