"""Where the project keeps caches and shipped assets."""

from __future__ import annotations

import os
from pathlib import Path

from headrep.errors import HeadrepError

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """Root cache folder: $HEADREP_CACHE, else ~/.cache/headrep."""
    env = os.environ.get("HEADREP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "headrep"


def asset_path(*parts: str) -> Path:
    """A file under the repository's assets/ folder (the project is installed editable: `pip install -e .`)."""
    root = Path(os.environ.get("HEADREP_ASSETS", REPO_ROOT / "assets"))
    path = root.joinpath(*parts)
    if not path.exists():
        raise HeadrepError(
            f"shipped asset {path} is missing; install the project from its repository with `pip install -e .` "
            "or point HEADREP_ASSETS at the repository's assets/ folder"
        )
    return path
