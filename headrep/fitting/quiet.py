"""Silencing native libraries' log lines (MediaPipe's C++ absl/glog ``W0000 …``/``I0000 …`` lines and
TensorFlow Lite's ``INFO: Created TensorFlow Lite XNNPACK delegate``), which are written to the process's
stderr file descriptor before Python's logging is set up and so cannot be filtered from Python.

The file descriptor 2 is pointed at /dev/null around the native calls only and restored after, so Python's
own errors and warnings (and progress bars between calls) still reach the terminal or the log.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr():
    """Within the block, writes to fd 2 by native code are dropped (set HEADREP_NATIVE_LOGS=1 to keep them)."""
    if os.environ.get("HEADREP_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. an embedding host): nothing to do
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def started(solution):
    """A MediaPipe solution with its graph started: one blank frame processed (call inside
    :func:`quiet_native_stderr`). The graph loads its TFLite models on worker threads, which log *after* the
    constructor has returned, when fd 2 is already restored; a processed frame waits for that start-up."""
    import numpy as np

    solution.process(np.zeros((64, 64, 3), np.uint8))
    return solution
