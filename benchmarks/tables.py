"""What the benchmark scripts share: the load line printed beside every timing, and markdown tables.

Imported as a sibling module (`python benchmarks/X.py` puts this folder first on sys.path)."""

from __future__ import annotations

import os


def load() -> str:
    """The 1/5/15-minute load averages: timings on a shared machine mean something only beside them."""
    return "load %.2f %.2f %.2f" % os.getloadavg()


def table(head, rows) -> str:
    """A markdown table with padded columns."""
    rows = [tuple(str(c) for c in r) for r in rows]
    w = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    out = ["| " + " | ".join(str(h).ljust(x) for h, x in zip(head, w)) + " |",
           "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    out += ["| " + " | ".join(c.ljust(x) for c, x in zip(r, w)) + " |" for r in rows]
    return "\n".join(out)
