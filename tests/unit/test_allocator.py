"""Importing distill keeps freed CPU buffers for reuse (distill/__init__.py): a chunked loss that allocates and frees
the same [rows × vocabulary] temporaries every chunk must not fault their pages in again each time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys
if sys.argv[1] == "distill":
    import distill  # noqa: F401
import torch
torch.empty(1)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
before = faults()
for _ in range(20):  # what each chunk of a divergence does: a fresh 8 MiB temporary, written, freed
    torch.ones(64, 32_000)
print(json.dumps(faults() - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_a_freed_buffer_is_reused_without_faulting_its_pages_in_again():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    faults = {}
    for mode in ("distill", "plain"):
        done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
        faults[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    # 20 fresh 8 MiB buffers fault ~2 000 pages each (4 KiB) or 4 each (huge pages) when mapped afresh; reused, the
    # first one's pages serve all twenty
    assert faults["distill"] < faults["plain"] / 4, faults
