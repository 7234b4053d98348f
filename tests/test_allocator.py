"""retain_freed_memory keeps freed blocks for the next allocations; keep_within_cap gives them back once they
exceed the cap; release_freed_memory always does; a cap of 0 hands every block of 1 MiB or more back when freed.

Measured in a fresh process: mallopt is process-wide, and other tests' training runs call it.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from tailor import allocator
from tailor.allocator import default_cap_mb, total_memory_mb, training_cap_mb
from tailor.preload import library

# Both probes' start: three freed blocks of BLOCK are what they watch come and go.
PRELUDE = """
import json, resource, sys, time, torch
from tailor import allocator, preload

BLOCK = 40 * 2**20  # above glibc's largest mmap threshold (32 MiB): by default each is mmap'd afresh

def resident():
    return int(open("/proc/self/statm").read().split()[1])
"""

PROBE = PRELUDE + """

def freed_blocks():
    blocks = [torch.ones(BLOCK, dtype=torch.uint8) for _ in range(3)]
    before = resident()
    del blocks
    return before

def given_back(before):
    return before - resident()

def freed_large_block():  # larger than all the blocks above together: no free chunk in the heap can serve it
    block = torch.ones(8 * BLOCK, dtype=torch.uint8)
    before = resident()
    del block
    return before

default = given_back(freed_blocks())
took = allocator.retain_freed_memory(int(sys.argv[1]))
cap = allocator.retained_cap_mb()
before = freed_blocks()
kept = given_back(before)
trimmed = allocator.keep_within_cap()
within_cap = given_back(before)
before = freed_blocks()
allocator.release_freed_memory()
released = given_back(before)
allocator.retain_freed_memory(0)  # training's default after a scoring pass retained: handed back
restored = given_back(freed_large_block()) * 3 / 8  # in the pages of three blocks, as the others
print(json.dumps({"default": default, "took": took, "cap": cap, "kept": kept,
                  "trimmed": trimmed, "within_cap": within_cap, "released": released, "restored": restored,
                  "pages": 3 * BLOCK // resource.getpagesize()}))
"""


# mallopt is glibc's: elsewhere retain_freed_memory() does nothing, and these tests have nothing to check.
pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


def probe(cap: int = -1, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "TAILOR_RETAIN_MEMORY"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(cap)], capture_output=True, text=True, check=True,
                         env={**environment, **env}).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_freed_blocks_stay_in_the_process_under_the_cap():
    r = probe(4096)
    assert r["default"] > r["pages"] * 0.9, r  # glibc's default: the pages went back to the kernel
    assert r["took"] and r["cap"] == 4096
    assert r["kept"] < r["pages"] * 0.1, r
    assert not r["trimmed"] and r["within_cap"] < r["pages"] * 0.1, r  # 120 MiB is under 4 GiB: still kept


def test_over_the_cap_they_go_back():
    r = probe(64)
    assert r["took"] and r["kept"] < r["pages"] * 0.1, r  # kept until asked
    assert r["trimmed"] and r["within_cap"] > r["pages"] * 0.9, r  # 120 MiB over where it started: given back


def test_release_gives_them_back():
    r = probe(4096)
    assert r["released"] > r["pages"] * 0.9, r


def test_a_cap_of_0_after_one_hands_freed_blocks_back():
    r = probe(4096)
    assert r["kept"] < r["pages"] * 0.1, r
    # A large block is mmap'd again and goes back on free. (Blocks the heap's free chunks can serve are reused
    # there: which ones depends on the heap's layout, so the probe's is larger.)
    assert r["restored"] > r["pages"] * 0.9, r


HAND_BACK = """
import json, sys, torch
from tailor import allocator

def resident():
    return int(open("/proc/self/statm").read().split()[1])

if sys.argv[1] == "tailor":
    allocator.retain_freed_memory(0)  # training's default
# An mmap'd block of 30 MiB freed: glibc's adaptive threshold rises to its size (up to 32 MiB), and blocks under
# that come from the heap from then on, as the activations of a training step do after its first steps.
block = torch.ones(30 * 2**20, dtype=torch.uint8)
del block
size = 2 * allocator.HAND_BACK_THRESHOLD  # over the hand-back threshold, under glibc's raised one
count = 120 * 2**20 // size
small = [torch.ones(size, dtype=torch.uint8) for _ in range(count)]
pin = torch.ones(2 * 2**20, dtype=torch.uint8)  # made after them: the heap's top is in use, so it cannot be trimmed
before = resident()
del small
print(json.dumps({"back": (before - resident()) / (count * size // 4096)}))
"""


@pytest.mark.parametrize("allocator", ["tailor", "glibc"])
def test_a_cap_of_0_hands_back_the_blocks_glibc_would_keep(allocator):
    """Blocks of several MiB freed in the middle of the heap: glibc's adaptive threshold keeps them in the process
    (what made training's resident memory grow over what it held); with a cap of 0 they go back when freed."""
    environment = {k: v for k, v in os.environ.items() if k != "TAILOR_RETAIN_MEMORY"}
    out = subprocess.run([sys.executable, "-c", HAND_BACK, allocator], capture_output=True, text=True, check=True,
                         env=environment).stdout
    back = json.loads(out.strip().splitlines()[-1])["back"]
    assert back > 0.9 if allocator == "tailor" else back < 0.1, back


def test_the_environment_variable_overrides_the_setting():
    r = probe(4096, TAILOR_RETAIN_MEMORY="0")
    assert not r["took"] and r["cap"] == 0
    assert r["kept"] > r["pages"] * 0.9, r  # handed back at once
    r = probe(0, TAILOR_RETAIN_MEMORY="64")
    assert r["took"] and r["cap"] == 64
    assert r["trimmed"], r


def test_scorings_default_cap_follows_the_machine():
    ram = total_memory_mb()
    assert ram > 0
    assert default_cap_mb() == min(4096, max(512, ram // 8))
    r = probe()  # AUTO, as scoring calls it
    assert r["took"] and r["cap"] == default_cap_mb()


MIMALLOC_PROBE = PRELUDE + """
def freed_after_delay():
    # Pages given back within 2.5 s of freeing three blocks, allocating meanwhile (mimalloc purges the ranges
    # whose delay has expired when it allocates or collects): over mimalloc's own purge delay of 1 s.
    blocks = [torch.ones(BLOCK, dtype=torch.uint8) for _ in range(3)]
    before = resident()
    del blocks
    for _ in range(25):
        time.sleep(0.1)
        torch.ones(2**16, dtype=torch.uint8)
        preload.mimalloc().mi_collect(False)
    return before - resident()

default = freed_after_delay()
took = allocator.retain_freed_memory(int(sys.argv[1]), grow=sys.argv[2] == "grow")
training = allocator.training_cap_mb("auto")
kept = freed_after_delay()
blocks = [torch.ones(BLOCK, dtype=torch.uint8) for _ in range(3)]
before = resident()
del blocks
trimmed = allocator.keep_within_cap()
within_cap = before - resident()
allocator.retain_freed_memory(0)
restored = freed_after_delay()
print(json.dumps({"default": default, "took": took, "training": training, "kept": kept, "trimmed": trimmed,
                  "within_cap": within_cap, "restored": restored, "pages": 3 * BLOCK // resource.getpagesize()}))
"""


@pytest.mark.parametrize("cap, grow", [(4096, "fixed"), (64, "fixed"), (64, "grow")])
def test_on_mimalloc_the_cap_keeps_freed_pages_past_its_purge_delay(cap, grow):
    """The `tailor` command's allocator: by itself mimalloc gives freed pages back a second after they are freed
    (and training faulted them in again: 1.2x slower on a Xeon with AMX); under a cap they stay until
    keep_within_cap finds the cap exceeded (unless it may grow and the machine has room, as train.retain_memory_mb
    auto asks) or a cap of 0 puts mimalloc's delay back."""
    path = library()
    assert path is not None, "cmeel-mimalloc is a dependency"
    environment = {k: v for k, v in os.environ.items() if k != "TAILOR_RETAIN_MEMORY"}
    out = subprocess.run([sys.executable, "-c", MIMALLOC_PROBE, str(cap), grow], capture_output=True, text=True,
                         check=True, env={**environment, "LD_PRELOAD": path}).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["default"] > r["pages"] * 0.9, r  # mimalloc's own delay: back within the wait
    assert r["took"] and r["training"] == default_cap_mb(), r  # training's auto cap on mimalloc
    assert r["kept"] < r["pages"] * 0.1, r  # kept past mimalloc's delay
    if cap == 4096 or grow == "grow":  # under the cap, or past it with the machine's RAM mostly available
        assert allocator.room_to_keep(), "this test needs over a quarter of the RAM available"
        assert not r["trimmed"] and r["within_cap"] < r["pages"] * 0.1, r
    else:  # 120 MiB over a cap of 64: given back at once
        assert r["trimmed"] and r["within_cap"] > r["pages"] * 0.9, r
    assert r["restored"] > r["pages"] * 0.9, r  # a cap of 0: mimalloc's own delay again


def test_training_keeps_nothing_on_glibc_by_default():
    assert training_cap_mb("auto") == 0  # this process runs on glibc's malloc: its heap would fragment
    assert training_cap_mb(512) == 512


def test_auto_keeps_pages_past_the_cap_only_while_the_machine_has_room(monkeypatch):
    released = []
    monkeypatch.setattr(allocator, "resident_mb", lambda: 5000)  # 5000 MiB over the floor, the cap 64
    monkeypatch.setattr(allocator, "release_freed_memory", lambda: released.append(1) or True)
    ram = total_memory_mb()
    for grow, free, gives_back in [(1, ram // 2, False), (1, ram // 8, True), (1, None, True), (0, ram // 2, True)]:
        monkeypatch.setattr(allocator, "_state", {"cap": 64, "floor": 0, "grow": grow})
        monkeypatch.setattr(allocator, "available_mb", lambda free=free: (free, "MemAvailable"))
        assert allocator.keep_within_cap() == gives_back and bool(released) == gives_back, (grow, free)
        released.clear()


def test_available_memory_is_read_from_the_kernel():
    free, source = allocator.available_mb()
    assert free is not None and 0 < free <= total_memory_mb(), (free, source)
    assert source in ("MemAvailable", "the cgroup's memory.max")


def test_product_cache_is_capped_unless_the_environment_sets_it():
    """oneDNN reads its cache's capacity once, at its first product: tailor sets it on import, before any."""
    code = "import os, tailor.allocator; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "128"
    env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "1024"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "1024"
