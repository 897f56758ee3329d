"""wsss.core.allocator: freed buffers are reused instead of faulting fresh pages in each time."""

import subprocess
import sys
import textwrap

import pytest

from wsss.core.allocator import retain_freed_memory

# A step's pattern: activations of a few MB each, written, kept until the backward pass, then all freed at once
# (glibc's dynamic threshold learns one buffer's size, but trims the heap when a whole step's worth comes free).
_CHILD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    if sys.argv[1] == "retain":
        from wsss.core.allocator import retain_freed_memory
        assert retain_freed_memory()
    np.ones(1 << 21)  # the first buffer faults in either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        activations = [np.ones(1 << 19) for _ in range(8)]  # 8 x 4 MiB, every page written
        del activations
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_buffers_are_reused_not_faulted_in_again():
    pages = 20 * 8 * (4 << 20) // 4096
    default, retained = _faults("default"), _faults("retain")
    assert default > 0.3 * pages  # glibc's default: most pages are faulted in again each step
    assert retained < 0.05 * pages


def test_a_second_call_is_free_and_agrees():
    assert retain_freed_memory() == retain_freed_memory()
