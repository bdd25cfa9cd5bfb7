"""distill: knowledge distillation for language models (README.md)."""

import os
import sys

# Large CPU tensors on transparent huge pages (PyTorch's own THP_MEM_ALLOC_ENABLE, read once when torch loads, so
# only settable before that): otherwise every fresh [rows × vocabulary] buffer of a loss pays a page fault per
# 4 KiB, which at LLM vocabularies costs as much as the arithmetic done in it (docs/performance.md).
# THP_MEM_ALLOC_ENABLE=0 in the environment opts out.
if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def _keep_freed_memory() -> None:
    """glibc: serve buffers up to 32 MiB from the heap and keep freed heap memory, instead of mapping each one
    afresh and unmapping it on free. PyTorch has no caching allocator on CPU, so a chunked loss that frees and
    re-allocates its [rows × vocabulary] temporaries every chunk otherwise faults every page in again (on huge
    pages: zeroes them) each time, which doubled its time (docs/performance.md, "What makes it fast").
    MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ in the environment: the user's choice, left alone."""
    if not sys.platform.startswith("linux") or {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's ceiling for this setting on 64-bit
    mallopt(m_trim_threshold, 1 << 30)


_keep_freed_memory()
