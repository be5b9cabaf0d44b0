"""headrep: a personalised, geometry-first 3D head representation on an SMPL-X-format body model."""

__version__ = "0.1.0"
