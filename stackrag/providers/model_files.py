"""Locating model weights inside installed data packages, without importing their code.

The weight packages are anonymous uploads: we only read their data files, found through the
import system's metadata, and check each file's sha256 before use.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from ..errors import Unavailable


def package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(f"the model package {package!r} is not installed; install it with: {install_hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_of(*paths: Path) -> str:
    """The sha256 of the files' bytes one after the other (one file, or the parts of a split one)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def verified_file(path: Path, sha256: str) -> Path:
    if not path.is_file():
        raise Unavailable(f"model file missing: {path}")
    actual = sha256_of(path)
    if actual != sha256:
        raise Unavailable(f"model file {path} has sha256 {actual}, expected {sha256}; reinstall its package")
    return path
