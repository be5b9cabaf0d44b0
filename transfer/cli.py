"""`transfer` command line. The module is planned (see DESIGN.md) but not built yet."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="transfer",
        description="transfer is not yet available in this version of headrep; see DESIGN.md for what it will do.",
    )
    parser.parse_args(argv)
    print("transfer: error: not yet available in this version of headrep (planned; see DESIGN.md)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
