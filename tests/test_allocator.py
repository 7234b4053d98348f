"""After retain_freed_memory, freed large blocks stay in the process for the next allocations.

Measured in a fresh process: mallopt is process-wide, and other tests' training runs call it.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

PROBE = """
import json, resource, torch
from tailor.allocator import retain_freed_memory

BLOCK = 40 * 2**20  # above glibc's largest mmap threshold (32 MiB): by default each is mmap'd afresh

def resident():
    return int(open("/proc/self/statm").read().split()[1])

def pages_given_back():
    blocks = [torch.ones(BLOCK, dtype=torch.uint8) for _ in range(3)]
    before = resident()
    del blocks
    return before - resident()

default = pages_given_back()
took = retain_freed_memory()
print(json.dumps({"default": default, "took": took, "retained": pages_given_back(), "pages": 3 * BLOCK // resource.getpagesize()}))
"""


# mallopt is glibc's: elsewhere retain_freed_memory() does nothing, and these tests have nothing to check.
pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

def probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_freed_blocks_stay_in_the_process():
    r = probe()
    assert r["default"] > r["pages"] * 0.9, r  # glibc's default: the pages went back to the kernel
    assert r["took"]
    assert r["retained"] < r["pages"] * 0.1, r


def test_an_environment_variable_keeps_glibc_defaults():
    r = probe(TAILOR_RETAIN_MEMORY="0")
    assert not r["took"]
    assert r["retained"] > r["pages"] * 0.9, r
