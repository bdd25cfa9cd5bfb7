"""Importing distill keeps freed CPU buffers for reuse (distill/__init__.py): a chunked loss that allocates and frees
the same [rows × vocabulary] temporaries every chunk must get them from glibc's heap and find them there again.

Checked on glibc's own bookkeeping (mallinfo2), not on page-fault counts: whether a reused buffer faults is the
kernel's business (huge-page settings, reclaim) and differed between machines; docs/performance.md measures the time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, sys
if sys.argv[1] == "distill":
    import distill  # noqa: F401
import torch
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
torch.empty(1)
before = libc.mallinfo2().hblkhd
chunk = torch.ones(64, 32_000)  # what each chunk of a divergence allocates: an 8 MiB temporary
mapped = libc.mallinfo2().hblkhd - before
del chunk
print(json.dumps({"mapped_on_its_own": mapped, "kept_after_free": libc.mallinfo2().fordblks}))
"""
BUFFER = 64 * 32_000 * 4


def _probe(mode: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_a_freed_chunk_buffer_stays_in_the_heap_for_the_next_chunk():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    ours, plain = _probe("distill", env), _probe("plain", env)
    # plain glibc maps an 8 MiB buffer on its own and unmaps it on free: the next chunk starts from fresh pages
    assert plain["mapped_on_its_own"] >= BUFFER and plain["kept_after_free"] < BUFFER, plain
    assert ours["mapped_on_its_own"] == 0 and ours["kept_after_free"] >= BUFFER, ours


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_the_users_malloc_settings_are_left_alone():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["MALLOC_TRIM_THRESHOLD_"] = "131072"
    assert _probe("distill", env)["mapped_on_its_own"] >= BUFFER
