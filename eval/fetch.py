"""Fetch the documents of the dev sets in eval/<set>/ into a cache outside git.

Each set names one pinned package in eval/<set>/source.json (a Debian .deb fetched with
`apt-get download NAME=VERSION`, or a PyPI sdist fetched with `pip download --no-deps
--no-binary :all: NAME==VERSION`), its sha256, and the folder inside the package that holds the
documents; eval/<set>/manifest.txt lists the documents (paths under that folder, which are the
document ids the questions name). The package is checked against its sha256 before anything is
extracted, and exactly the manifest's files are written to CACHE/<set>/.

Usage: python eval/fetch.py [SET ...] [--cache DIR]      (default cache: ~/.cache/stackrag/devsets,
                                                          or $STACKRAG_DEVSETS)
Standard library only, so any Python 3.10+ runs it. A Debian package needs `apt-get update` once
on a fresh machine.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

EVAL = Path(__file__).resolve().parent
STAMP = ".fetched"


def default_cache() -> Path:
    return Path(os.environ.get("STACKRAG_DEVSETS") or Path.home() / ".cache" / "stackrag" / "devsets")


@dataclass
class DevSet:
    name: str
    folder: Path  # eval/<set>
    source: dict

    @property
    def package(self) -> dict:
        return self.source["package"]

    def manifest(self) -> list[str]:
        lines = (self.folder / "manifest.txt").read_text(encoding="utf-8").splitlines()
        return [line for line in (x.strip() for x in lines) if line and not line.startswith("#")]

    def questions(self) -> Path:
        return self.folder / "dev.jsonl"

    def unanswerable(self) -> Path:
        return self.folder / "dev_unanswerable.jsonl"

    def corpus(self, cache: Path) -> Path:
        return cache / self.name


def dev_sets() -> dict[str, DevSet]:
    sets = {}
    for source in sorted(EVAL.glob("*/source.json")):
        data = json.loads(source.read_text(encoding="utf-8"))
        sets[data["name"]] = DevSet(data["name"], source.parent, data)
    return sets


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(package: dict, into: Path) -> Path:
    """The package file, downloaded once into `into` and checked against its sha256."""
    into.mkdir(parents=True, exist_ok=True)
    path = into / package["file"]
    if not path.exists():
        if package["kind"] == "deb":
            cmd = ["apt-get", "download", f"{package['name']}={package['version']}"]
        elif package["kind"] == "sdist":
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   f"{package['name']}=={package['version']}", "-d", str(into)]
        else:
            raise SystemExit(f"unknown package kind {package['kind']!r}")
        result = subprocess.run(cmd, cwd=into, capture_output=True, text=True)
        if result.returncode != 0 or not path.exists():
            hint = " (run `apt-get update` first?)" if package["kind"] == "deb" else ""
            raise SystemExit(f"could not download {package['file']}{hint}: {' '.join(cmd)}\n{result.stderr.strip()}")
    actual = sha256_of(path)
    if actual != package["sha256"]:
        raise SystemExit(f"{path}: sha256 {actual}, expected {package['sha256']}; delete it and run again")
    return path


def deb_data(path: Path) -> tarfile.TarFile:
    """The data.tar.* member of a .deb (an ar archive) as an open tar file."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SystemExit(f"{path} is not a Debian package")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[offset + 60 : offset + 60 + size]
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
        offset += 60 + size + (size % 2)
    raise SystemExit(f"{path} has no data.tar member")


def open_package(path: Path, kind: str) -> tarfile.TarFile:
    return deb_data(path) if kind == "deb" else tarfile.open(path, mode="r:*")


def extract(devset: DevSet, archive: Path, target: Path) -> int:
    wanted = devset.manifest()
    root = devset.source["root"].strip("/")
    by_id = {}
    with open_package(archive, devset.package["kind"]) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        for doc_id in wanted:
            member = members.get(f"{root}/{doc_id}")
            if member is None:
                raise SystemExit(f"{devset.name}: {root}/{doc_id} is not in {archive.name}")
            f = tar.extractfile(member)
            if f is None:
                raise SystemExit(f"{devset.name}: {root}/{doc_id} is not a file in {archive.name}")
            by_id[doc_id] = f.read()
    if target.exists():
        shutil.rmtree(target)
    for doc_id, data in by_id.items():
        out = target / doc_id
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    return len(by_id)


def fetch(devset: DevSet, cache: Path) -> Path:
    """CACHE/<set>/ holding the set's documents; a no-op when the stamp matches package and manifest."""
    target = devset.corpus(cache)
    manifest_digest = hashlib.sha256((devset.folder / "manifest.txt").read_bytes()).hexdigest()
    stamp = f"{devset.package['sha256']} {manifest_digest}\n"
    stamp_file = cache / f"{devset.name}{STAMP}"
    if target.is_dir() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return target
    archive = download(devset.package, cache / "_downloads")
    count = extract(devset, archive, target)
    stamp_file.write_text(stamp)
    print(f"{devset.name}: {count} documents from {archive.name} -> {target}", file=sys.stderr)
    return target


def main() -> None:
    sets = dev_sets()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="*", choices=[[], *sorted(sets)], help="default: every set")
    parser.add_argument("--cache", type=Path, default=default_cache())
    args = parser.parse_args()
    for name in args.sets or sorted(sets):
        print(fetch(sets[name], args.cache))


if __name__ == "__main__":
    main()
