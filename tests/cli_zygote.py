"""The fork server behind `cli_process.tailor_cli`: a process that has imported torch, transformers and tailor once,
and forks a child per `tailor` command the tests run.

Why: a fresh `python -m tailor.cli` spends 4-8 s of a 2-core machine importing torch and transformers before it
does anything, and ~2 s more tearing them down at exit; the suite runs the CLI well over a hundred times
(on the 2-core AVX2-only EPYC, pytest took 1495 s with a fresh process per command). A forked child starts with
those modules imported and nothing else done: no thread pool started, no model loaded, no setting made, so it is as
fresh a process as `python -m tailor.cli` (own pid, exit code, stdin/stdout/stderr, cwd and environment).

Protocol, one connection per command: the client sends one JSON line {argv, cwd, env, stdin, stdout, stderr,
preamble} (stdin, stdout and stderr are file paths; preamble is code the child runs before the command, or null);
the server answers the child's pid, then its exit code as subprocess reports it (-N for a signal), a line each.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import sys


def preload() -> None:
    """What every command imports first; importing is all: nothing here may start a thread or touch a model."""
    import torch  # noqa: F401  (imported for the children)
    import transformers  # noqa: F401

    import tailor.cli

    tailor.cli.commands()  # every command module
    for name in ("transformers.models.llama.modeling_llama", "transformers.models.gpt2.modeling_gpt2",
                 "transformers.models.qwen2.modeling_qwen2", "transformers.models.t5.modeling_t5",
                 "transformers.models.bert.modeling_bert", "tailor.workflow", "tailor.train.loop",
                 "tailor.models.load", "tailor.generate", "tailor.eval.score", "peft", "sacrebleu"):
        importlib.import_module(name)


def child(request: dict) -> None:
    """In the forked child: become the command's process, run `python -m tailor.cli ARGV`, exit with its code."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, request["stdin"] or os.devnull, os.O_RDONLY),
                            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.path[0] = os.getcwd()  # as `python -m` sets it
    sys.argv = ["tailor.cli", *request["argv"]]
    import runpy

    sys.modules.pop("tailor.cli", None)  # `python -m` runs the module as __main__ without importing it first
    try:
        if request.get("preamble"):
            exec(compile(request["preamble"], "<preamble>", "exec"), {"__name__": "__preamble__"})
        runpy.run_module("tailor.cli", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code
    except BaseException:  # as the interpreter does with an uncaught exception: the traceback, status 1
        import traceback

        traceback.print_exc()
        code = 1
    exit_now(code)


def exit_now(code) -> None:
    """Exit as the interpreter would (other threads joined, atexit handlers run, output flushed) without its
    final teardown of every module, which with torch and transformers imported takes ~2 s of a 2-core CPU."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def serve(path: str) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".part")
    listener.listen(4)
    os.rename(path + ".part", path)  # the client waits for this name: the server is ready
    parent = os.getppid()
    listener.settimeout(5)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test process died without stopping this server
                return
            continue
        request = json.loads(conn.makefile("r").readline())
        pid = os.fork()
        if pid == 0:
            listener.close()
            conn.close()
            child(request)  # never returns
        try:
            conn.sendall(f"{pid}\n".encode())
        except OSError:
            pass
        _, status = os.waitpid(pid, 0)
        try:  # a client that timed out has killed the child and gone
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass
        conn.close()


if __name__ == "__main__":
    sys.path.pop(0)  # this folder: the commands must not import the tests' modules
    preload()
    serve(sys.argv[1])
