"""User-facing errors of the generator: the CLI prints them as one line and exits with status 2."""

from headrep.errors import HeadrepError


class GeneratorInputError(HeadrepError):
    """Bad input to the generator: a reference image without a face, a condition video that is too short,
    a checkpoint folder from another architecture, a data folder without clips, ..."""
