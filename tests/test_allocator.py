"""After retain_freed_memory, large blocks freed and allocated again reuse their pages.

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

def faults_to_reallocate():
    blocks = [torch.ones(BLOCK, dtype=torch.uint8) for _ in range(3)]
    del blocks
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(BLOCK, dtype=torch.uint8) for _ in range(3)]
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_to_reallocate()
took = retain_freed_memory()
faults_to_reallocate()  # the heap grows to hold them once
print(json.dumps({"default": default, "took": took, "retained": faults_to_reallocate(),
                  "pages": 3 * BLOCK // resource.getpagesize()}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_page_faults():
    r = probe()
    assert r["default"] > r["pages"] // 2  # glibc's default: the pages went back to the kernel
    assert r["took"]
    assert r["retained"] < r["pages"] // 10, r


def test_an_environment_variable_keeps_glibc_defaults():
    r = probe(TAILOR_RETAIN_MEMORY="0")
    assert not r["took"]
    assert r["retained"] > r["pages"] // 2
