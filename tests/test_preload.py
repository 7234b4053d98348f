"""The `tailor` command re-executes itself on mimalloc, once, and hands its children the environment it was given."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tailor import preload

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")

PROBE = ("from tailor.preload import preload; preload()\n"
         "import os, sys, tailor.preload as p\n"
         "maps = open('/proc/self/maps').read()\n"
         "print(repr(os.environ.get('LD_PRELOAD')), p.name(), 'libmimalloc' in maps, '_TAILOR_PRELOADED' in os.environ,"
         " sys.argv[1:])\n")


def probe(*args: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", preload.CHOICE)}
    out = subprocess.run([sys.executable, "-c", PROBE, *args], env={**environ, **env}, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return out.strip().splitlines()


def test_the_wheel_ships_the_library():
    path = preload.library()
    assert path is not None and Path(path).is_file(), "cmeel-mimalloc is a dependency: its library must be there"


def test_re_executes_on_mimalloc_once_and_restores_the_environment():
    lines = probe("a b", "--c")
    # One line: the first process exec'd, so it printed nothing; the second runs on mimalloc, its arguments intact,
    # with LD_PRELOAD and the marker gone again for whatever it starts.
    assert lines == ["None mimalloc 3.4.3 True False ['a b', '--c']"]


def test_keeps_a_preload_the_user_set():
    other = "/lib/x86_64-linux-gnu/libz.so.1"
    if not os.path.isfile(other):
        pytest.skip(f"{other}: not on this machine")
    assert probe(LD_PRELOAD=other) == [f"'{other}' mimalloc 3.4.3 True False []"]


def test_system_allocator_on_request():
    assert probe(TAILOR_ALLOCATOR="system") == ["None system malloc False False []"]


def test_a_forked_command_does_not_restart_its_parent(monkeypatch):
    # The fork server's children run `tailor.cli` with runpy: their command line is the server's, which must not run again.
    monkeypatch.delenv(preload._DONE, raising=False)
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "server.py", "socket"])
    monkeypatch.setattr(sys, "argv", ["tailor.cli", "train", "cfg.yaml"])
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail(f"re-executed: {a[1]}"))
    preload.preload()  # returns: nothing to do


def test_console_script_trains_on_mimalloc(tiny_config):
    """The installed `tailor` script: its training line names the allocator it runs on."""
    script = Path(sys.executable).with_name("tailor")
    if not script.is_file():
        pytest.fail(f"{script}: the console script is not installed (make install)")
    cfg = tiny_config(train={"max_steps": 1, "eval_every": 0, "save_every": 0})
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", preload.CHOICE)}
    proc = subprocess.run([str(script), "train", str(cfg)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "allocator mimalloc 3.4.3" in proc.stdout, proc.stdout[-3000:]
