"""What a confined process sees of the file system: a view built in its own
mount namespace, so it can read what it needs and nothing that is private.

Two kinds of mounts make a view:

- an *overlay* covers a folder: with a bind of another folder (a session's own
  ``/tmp``), or with an empty read-only skeleton (``/root``, ``/home``, or any
  folder the confined user may not enter);
- an *exposure* puts a folder back at its own path on top of the overlays: the
  Python installation, Salvus's packages, a session's home.

So an install in root's 0700 home folder, or a virtualenv made by a Python in
someone's home, is readable by a session (and nothing else of that home is),
without changing any permission on the host. ``plan`` decides; ``apply`` mounts,
through the ``System`` seam, in a mount namespace the caller has made.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
KEPT_OPTIONS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
                "strictatime": MS_STRICTATIME}
# Skeletons hold only the folders leading to exposures.
SKELETON_OPTIONS = "size=64k,nr_inodes=4096,mode=0755"
ALWAYS_HIDDEN = (Path("/root"), Path("/home"))


@dataclass(frozen=True)
class View:
    overlays: dict[Path, Path | None] = field(default_factory=dict)  # target -> source or skeleton
    exposures: dict[Path, Path] = field(default_factory=dict)  # target -> source, after overlays


def enterable_by_others(folder: Path) -> bool:
    """Whether a user who owns nothing and is in no group may pass through."""
    try:
        return bool(folder.stat().st_mode & stat.S_IXOTH)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan(needed: dict[Path, Path], overlays: dict[Path, Path | None],
         enterable: Callable[[Path], bool] = enterable_by_others,
         hidden: Iterable[Path] = ALWAYS_HIDDEN) -> View:
    """The view in which each ``needed`` target shows its source.

    ``overlays`` are wanted anyway (a session's private /tmp); every folder in
    ``hidden`` that exists, and the first folder above a needed target that
    ``enterable`` refuses, are covered with a skeleton.
    """
    covers: dict[Path, Path | None] = dict(overlays)
    for folder in hidden:
        if folder.is_dir():
            covers.setdefault(folder, None)
    for target in needed:
        for folder in reversed(target.parents):
            if folder != Path("/") and not enterable(folder):
                covers.setdefault(folder, None)
                break
    # A cover inside another cover is hidden by it anyway.
    outermost = {t: s for t, s in covers.items()
                 if not any(o != t and _inside(t, o) for o in covers)}
    exposures = {target: source for target, source in needed.items()
                 if target != source or any(_inside(target, o) for o in outermost)}
    # A folder inside another one shown as itself comes along with it.
    exposures = {t: s for t, s in exposures.items()
                 if not any(o != t and _inside(t, o) and exposures[o] == o for o in exposures)}
    return View(dict(sorted(outermost.items())), dict(sorted(exposures.items())))


def apply(system, view: View) -> None:
    """Mount ``view`` as root, in a mount namespace of the caller's whose
    propagation is already private (nothing may leak to the host's).

    Sources are opened before anything is covered: a source under a cover (a
    session's home below a covered /tmp) stays reachable through its
    descriptor, as /proc/self/fd/N.
    """
    sources = {p for p in [*view.overlays.values(), *view.exposures.values()] if p is not None}
    fds = {path: os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) for path in sources}
    try:
        for target, source in view.overlays.items():
            if source is None:
                system.mount("tmpfs", str(target), "tmpfs", MS_NOSUID | MS_NODEV,
                             SKELETON_OPTIONS)
            else:
                system.mount(f"/proc/self/fd/{fds[source]}", str(target), None,
                             MS_BIND | MS_REC, None)
        for target, source in sorted(view.exposures.items(), key=lambda item: len(item[0].parts)):
            os.makedirs(target, mode=0o755, exist_ok=True)
            system.mount(f"/proc/self/fd/{fds[source]}", str(target), None, MS_BIND | MS_REC,
                         None)
        for target, source in view.overlays.items():
            if source is None:  # fill first, then no one writes into a skeleton again
                system.mount(None, str(target), None,
                             MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    finally:
        for fd in fds.values():
            os.close(fd)


def mount_points(mountinfo: str) -> list[tuple[str, int]]:
    """(mount point, the flags to keep when remounting it) of each mount, parents
    first, from the text of /proc/self/mountinfo."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")  # \040 and the like
        flags = 0
        for option in fields[5].split(","):
            flags |= KEPT_OPTIONS.get(option, 0)
        found.append((point, flags))
    return sorted(found, key=lambda item: len(Path(item[0]).parts))


def read_only_everything(system) -> None:
    """Make every mount of the caller's mount namespace read-only: nothing on
    the host is writable from here, whatever its permissions (a world-writable
    folder nobody thought of included). What a session may write is mounted
    afterwards, writable, and is its own."""
    with open("/proc/self/mountinfo") as f:
        points = mount_points(f.read())
    for point, flags in points:
        system.mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags, None)


def install_paths() -> list[Path]:
    """Folders a Python process of this installation reads: the interpreter's
    prefixes (a virtualenv's and its base Python's), the standard library and
    site-packages, and Salvus's own packages (an editable install keeps them in
    a checkout, whose other contents, a data folder among them, stay covered)."""
    found = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(os.__file__), *sysconfig.get_paths().values(),
             os.path.dirname(os.path.realpath(sys.executable))}
    for package in ("sage_worker", "web", "salvusctl"):
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            found.update(spec.submodule_search_locations)
    return sorted({Path(p).resolve() for p in found if p and os.path.isdir(p)})
