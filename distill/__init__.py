"""distill: knowledge distillation for language models (README.md)."""

import os
import sys

# Large CPU tensors on transparent huge pages (PyTorch's own THP_MEM_ALLOC_ENABLE, read once when torch loads, so
# only settable before that): otherwise every fresh [rows × vocabulary] buffer of a loss pays a page fault per
# 4 KiB, which at LLM vocabularies costs as much as the arithmetic done in it (docs/performance.md).
# THP_MEM_ALLOC_ENABLE=0 in the environment opts out.
if "torch" not in sys.modules:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
