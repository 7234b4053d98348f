"""`tailor_cli(*args)`: run `python -m tailor.cli ARGS` as its own process, as `subprocess.run` would, and return the
CompletedProcess (text stdout and stderr, returncode).

The process is forked from a server that has already imported torch, transformers and tailor (cli_zygote.py),
which saves each command the 4-8 s those imports take. A call with its own `env` runs a plain subprocess (the
server's imports have read the environment it started with), and so does every call with TAILOR_TEST_FORK=0;
tests about a command's start-up itself (what it prints while importing) call subprocess directly.
`preamble`: Python code the process runs before the command (a test's fault injection), as `python -c` would.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = Path(__file__).with_name("cli_zygote.py")
_server: dict = {}


def _socket_path() -> str:
    if not _server:
        folder = tempfile.mkdtemp(prefix="tailor-zygote-")
        path = os.path.join(folder, "sock")
        log = open(os.path.join(folder, "log"), "w")
        proc = subprocess.Popen([sys.executable, str(SERVER), path], stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def stop():
            proc.kill()
            proc.wait()
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(stop)
        deadline = time.monotonic() + 300
        while not os.path.exists(path):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the CLI fork server did not start:\n{Path(folder, 'log').read_text()}")
            time.sleep(0.05)
        _server.update(path=path)
    return _server["path"]


def _start(argv: list[str], cwd, stdin: str | None, stdout: str, stderr: str, preamble: str | None = None):
    """Ask the server for a child running `tailor ARGV`: (connection, its reply lines, the child's pid)."""
    request = {"argv": [str(a) for a in argv], "cwd": str(Path(cwd or os.getcwd()).resolve()),
               "env": dict(os.environ), "stdin": stdin, "stdout": stdout, "stderr": stderr, "preamble": preamble}
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(_socket_path())
    conn.sendall((json.dumps(request) + "\n").encode())
    replies = conn.makefile("r")
    return conn, replies, int(replies.readline())


# After a preamble, the command as `python -m tailor.cli` runs it.
RUN_CLI = "\nimport runpy\nrunpy.run_module('tailor.cli', run_name='__main__', alter_sys=True)\n"


def tailor_cli(*args, cwd=None, input: str | None = None, timeout: float | None = None,
               env: dict | None = None, preamble: str | None = None) -> subprocess.CompletedProcess:
    argv = [str(a) for a in args]
    command = [sys.executable, *(["-c", preamble + RUN_CLI] if preamble else ["-m", "tailor.cli"]), *argv]
    if env is not None or os.environ.get("TAILOR_TEST_FORK") == "0":
        return subprocess.run(command, capture_output=True, text=True, cwd=cwd, input=input, timeout=timeout,
                              env=env)
    with tempfile.TemporaryDirectory(prefix="tailor-cli-") as folder:
        stdin = None
        if input is not None:
            stdin = os.path.join(folder, "stdin")
            Path(stdin).write_text(input)
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        conn, replies, pid = _start(argv, cwd, stdin, out, err, preamble)
        with conn:
            conn.settimeout(timeout)
            try:
                code = int(replies.readline())
            except (socket.timeout, TimeoutError):
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, code, Path(out).read_text(errors="replace"),
                                           Path(err).read_text(errors="replace"))


class Started:
    """A `tailor` command started through the fork server and not waited for (the tests that kill one): `pid`,
    `wait()` -> its exit code; its output is dropped."""

    def __init__(self, *args, cwd=None):
        self._proc = None
        self.returncode = None
        if os.environ.get("TAILOR_TEST_FORK") == "0":
            self._proc = subprocess.Popen([sys.executable, "-m", "tailor.cli", *map(str, args)], cwd=cwd,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.pid = self._proc.pid
            return
        self._conn, self._replies, self.pid = _start(list(args), cwd, None, os.devnull, os.devnull)

    def wait(self) -> int:
        if self._proc is not None:
            self.returncode = self._proc.wait()
        elif self.returncode is None:
            self.returncode = int(self._replies.readline())
            self._conn.close()
        return self.returncode
