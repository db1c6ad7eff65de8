"""Files in and out of a container as tar archives: packed owned by root (:func:`pack`,
:func:`pack_at`), a container's archive extracted strictly inside its target as regular
files, directories and symbolic links only (:func:`extract`), and a copy taken out merged
into its place, links moved as links (:func:`merge_into`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import tarfile

def pack(source: Path, target: str, archive: str) -> str:
    """Write ``source`` (a directory's content, or one file named as ``target``) as a tar
    archive owned by root; the directory to extract it in."""
    import tarfile  # only when a container trial copies files in

    with tarfile.open(archive, mode="w") as tar:
        if source.is_dir():
            for child in sorted(source.iterdir()):
                tar.add(child, arcname=child.name, filter=_as_root)
            return target
        tar.add(source, arcname=os.path.basename(target), filter=_as_root)
    return os.path.dirname(target) or "/"


def pack_at(items: Sequence[tuple[Path, str]], archive: str) -> None:
    """Write a tar archive, owned by root, to extract at ``/``: each ``(host path, absolute
    path inside)`` in order, a directory with its content. The directories above each
    inside path are not in it (created as needed, existing ones left as they are)."""
    import tarfile  # only when a container trial copies files in

    with tarfile.open(archive, mode="w") as tar:
        for source, inside in items:
            tar.add(source, arcname=inside.strip("/"), filter=_as_root)


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def extract(archive: IO[bytes], target: Path) -> list[str]:
    """Extract a tar stream the container wrote under ``target``: regular files, directories
    and symbolic links, each strictly inside ``target`` (never through a link it made);
    anything else is named in the list returned."""
    skipped: list[str] = []
    root = os.path.realpath(target)
    import tarfile

    with tarfile.open(fileobj=archive, mode="r|") as tar:
        for member in tar:
            name = os.path.normpath(member.name)
            if name in (".", ""):
                continue
            path = os.path.join(root, name)
            if name.startswith("..") or os.path.isabs(name) or not path.startswith(root + os.sep):
                skipped.append(member.name)
                continue
            parent = os.path.dirname(path)
            if os.path.realpath(parent) != os.path.normpath(parent):
                skipped.append(member.name)  # below a link the archive made
                continue
            try:
                if member.isdir():
                    os.makedirs(path, exist_ok=True)
                    os.chmod(path, 0o755 | (member.mode & 0o777))
                elif member.isreg():
                    source = tar.extractfile(member)
                    assert source is not None
                    os.makedirs(parent, exist_ok=True)
                    with open(path, "wb") as out:
                        shutil.copyfileobj(source, out)
                    os.chmod(path, member.mode & 0o777)
                elif member.issym():
                    os.makedirs(parent, exist_ok=True)
                    os.symlink(member.linkname, path)
                else:
                    skipped.append(member.name)
            except OSError:
                skipped.append(member.name)
    return skipped


def merge_into(source: Path, target: Path) -> None:
    """Move what ``source`` (a copy taken out of a container) holds into ``target``
    (created), replacing files of the same name; links are moved as links, never followed."""
    target.mkdir(parents=True, exist_ok=True)
    if source.is_symlink() or not source.is_dir():  # never through a link from inside
        return
    for child in source.iterdir():
        dest = target / child.name
        if child.is_dir() and not child.is_symlink() and dest.is_dir() and not dest.is_symlink():
            merge_into(child, dest)
            continue
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif os.path.lexists(dest):
            dest.unlink()
        os.replace(child, dest)
