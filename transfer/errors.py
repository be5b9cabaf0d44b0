"""User-facing errors of `transfer`: the CLI prints them as one line and exits with status 2."""

from headrep.errors import HeadrepError


class TransferError(HeadrepError):
    """Bad input to transfer: an empty rep list, a rep without valid frames, reps of different models or
    topologies, a missing or corrupt transfer-model file."""
