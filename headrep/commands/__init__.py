"""The ``headrep`` command line: argparse, printing, progress and exit codes only. Library callers use
``headrep.fitting``, ``headrep.rep`` and ``headrep.model``; nothing outside this folder imports it."""
