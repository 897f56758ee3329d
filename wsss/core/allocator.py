"""Keep freed memory in the process (glibc's malloc) instead of handing it back to the system after every step.

Why: a training or inference step allocates and frees the same few large activation buffers (MBs each) again and
again. glibc serves such blocks with `mmap` and returns them with `munmap` (or trims the heap top), so each step
touches fresh pages and pays a page fault per 4 KiB page: ~870k minor faults in two ICD epochs on the synthetic
default, several times that on the DeepLab stage, and the faults are dear in virtual machines. With the
thresholds raised, freed blocks stay in the heap and are reused: ~100k faults, and 5 % less time per ICD step,
15 % per DeepLab VGG16 step on 2 cores (measured with `/usr/bin/time`; the numbers are identical, only where
memory comes from changes). The heap then keeps its high-water mark, which a step reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX): blocks up to 32 MiB come from
# the heap; larger ones (rare at this pipeline's sizes) still use mmap.
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of the heap is returned to the system only beyond this much.
TRIM_THRESHOLD = 1 << 30


@functools.cache
def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where the C library has no
    mallopt (macOS, musl), which then keeps its own policy."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
