"""User-facing errors: the CLI prints these as one clear line and exits non-zero, without a traceback."""


class HeadrepError(Exception):
    """An error caused by the user's input or environment (bad file, missing data, no network)."""


class ModelFileError(HeadrepError):
    """A body-model file is missing, unreadable, or not in SMPL-X format."""


class RenderInputError(HeadrepError):
    """Geometry handed to the renderer is malformed (wrong shapes, NaNs, bad indices)."""
