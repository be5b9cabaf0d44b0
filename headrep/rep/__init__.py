"""The HeadRep: one fitted video as a folder (``rep.safetensors`` + ``rep.json``), and its public API.

The format is specified in :mod:`headrep.rep.format`'s docstring. What other packages use:

* :class:`HeadRep` — ``HeadRep.load(path, model=None, build=True)``, ``HeadRep.create(...)``, ``save``;
  geometry ``vertices(ts, space)``, ``neutral_vertices()``, ``neutral_mesh()``, ``mesh(t)``,
  ``landmarks68(ts)``, ``dynamic_offsets_dense(ts)``; cameras ``crop_camera(t)``, ``frame_camera()``,
  ``crop_transform(t)``; ``render(t)``; ``require_model()``; properties ``frames``, ``valid``, ``source``,
  ``fps``, ``boxes``, ``image_size``, ``is_standin``, ``face_vertices``, ``landmarks``.
* :func:`source_crops` — the source frames cropped exactly as the fit cropped them.
* :func:`describe` — the text ``headrep info`` prints.
* :func:`versions` — the library versions a new file records.
"""

from headrep.rep.format import (FORMAT, JSON_FILE, TENSOR_FILE, VERSION, HeadRep, load, resolve_model,
                                versions)
from headrep.rep.report import describe, swing_summary
from headrep.rep.sources import source_crops, source_path

__all__ = ["FORMAT", "JSON_FILE", "TENSOR_FILE", "VERSION", "HeadRep", "describe", "load", "resolve_model",
           "source_crops", "source_path", "swing_summary", "versions"]
