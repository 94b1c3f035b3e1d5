"""The static files as browsers get them, and the one manifest that names them.

Every file under ``web/static/`` (found by scanning: a new file needs no
listing here) becomes an :class:`Asset`: scripts and style sheets minified
(rjsmin / rcssmin, which only drop comments and blanks, so they cannot change
what the code does; the authors' leading license notice stays), references to
other static files rewritten to their hashed names, then named by the SHA-256
of that body: ``/static/app.js`` is also ``/static/app.<hash>.js``. A hashed
name is served ``immutable`` for a year; the plain name keeps working with a
short lifetime; a hashed name of an earlier version gets today's file, also
short-lived, rather than a 404 for a page loaded before an upgrade. HTML files
are pages, not assets: they keep their names (the viewer frame's URL, the
error pages), are ``no-cache``, and only have their references rewritten.
``web/static/index.html`` stays readable with plain names; the pages served
from it name the hashed files.

Compression (brotli and gzip, whichever the browser accepts, only when it
saves bytes) is done once per body: ``main()`` (``make install``) writes the
best levels into ``static/.compressed/<sha256>.br|gzip``;
a body missing there (edited since, or a ``pip install`` without the build)
is compressed on its first request at a level that takes milliseconds, and
kept in memory. Nothing is compressed per request.

The manifest is rebuilt when a file under static/ changes (looked at no more
than once a second), so an edited or added file is served without a restart.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import posixpath
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import brotli
import rcssmin
import rjsmin
from flask import Request, Response

STATIC = Path(__file__).parent / "static"
CACHE = STATIC / ".compressed"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"
RECHECK = 1.0  # seconds between looks for changed files
HASH_LENGTH = 10
CODINGS = ("br", "gzip")  # in order of preference: brotli is ~15% smaller
# Compressed once per body: the build takes the best levels (seconds for
# three.js), a frontend that must do it itself the fast ones, since it is
# one process serving every browser and must not stall for seconds.
BUILD_LEVELS = {"br": 11, "gzip": 9}
SERVE_LEVELS = {"br": 5, "gzip": 6}
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
         ".html": "text/html", ".svg": "image/svg+xml", ".json": "application/json",
         ".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf",
         ".png": "image/png", ".txt": "text/plain", "": "text/plain"}
COMPRESSIBLE = ("text/", "image/svg+xml", "application/json")
# Absolute references (HTML attributes, JS imports, CSS; not another host's
# /static/) and relative CSS url()s.
ABSOLUTE = re.compile(r"(?<![\w.-])/static/([\w./-]+)")
CSS_URL = re.compile(r"""url\(\s*(['"]?)([^'")\s]+)\1\s*\)""")
HASHED = re.compile(rf"^(?P<stem>.+)\.[0-9a-f]{{{HASH_LENGTH}}}(?P<ext>\.[^./]+)$")
# A leading comment naming a license or copyright (CodeMirror's) must survive.
NOTICE = re.compile(r"\A\s*(?:(?://[^\n]*\n\s*)+|/\*.*?\*/)", re.S)


@dataclass
class Asset:
    """One file as served: ``body`` after minifying and rewriting."""

    name: str
    body: bytes
    mimetype: str
    digest: str
    hashed_name: str | None  # None for pages, which keep their names
    compressed: dict[str, bytes | None] = field(default_factory=dict)

    @property
    def compressible(self) -> bool:
        return self.mimetype.startswith(COMPRESSIBLE)

    def encoded(self, coding: str) -> bytes | None:
        """The body in ``coding``; None when that does not make it smaller."""
        if coding not in self.compressed:
            self.compressed[coding] = _smaller(self.body, _load_or_compress(self, coding))
        return self.compressed[coding]


def _smaller(body: bytes, packed: bytes) -> bytes | None:
    return packed if len(packed) < len(body) else None


def _load_or_compress(asset: Asset, coding: str) -> bytes:
    try:
        return (CACHE / f"{asset.digest}.{coding}").read_bytes()  # the build's
    except OSError:
        return compress(asset.body, coding, SERVE_LEVELS[coding])


def compress(body: bytes, coding: str, level: int) -> bytes:
    if coding == "br":
        return brotli.compress(body, quality=level)
    return gzip.compress(body, compresslevel=level, mtime=0)


def minify(name: str, text: str) -> str:
    """Comments and blanks out of scripts and style sheets not minified yet."""
    if ".min." in name or not name.endswith((".js", ".mjs", ".css")):
        return text
    notice = NOTICE.match(text)
    kept = notice.group(0).strip() + "\n" if notice and re.search(
        r"licen[cs]e|copyright", notice.group(0), re.I) else ""
    small = rcssmin.cssmin(text) if name.endswith(".css") else rjsmin.jsmin(text)
    return kept + small


def hashed(name: str, digest: str) -> str:
    """``vendor/katex/katex.min.css`` -> ``vendor/katex/katex.min.<hash>.css``."""
    stem, dot, ext = name.rpartition(".")
    if not dot or "/" in ext:
        return f"{name}.{digest[:HASH_LENGTH]}"
    return f"{stem}.{digest[:HASH_LENGTH]}.{ext}"


class Manifest:
    """Every file under ``root``, processed once, by plain and hashed name."""

    def __init__(self, root: Path):
        self.root = root
        self.sources = {path.relative_to(root).as_posix(): path for path in _files(root)}
        self.assets: dict[str, Asset] = {}
        self.by_hashed: dict[str, Asset] = {}
        self._building: set[str] = set()
        for name in sorted(self.sources):
            self.asset(name)

    def asset(self, name: str) -> Asset | None:
        """The processed file ``name`` (its references' targets first)."""
        if name in self.assets or name not in self.sources or name in self._building:
            return self.assets.get(name)
        self._building.add(name)  # a cycle of references keeps plain names
        raw = self.sources[name].read_bytes()
        suffix = posixpath.splitext(name)[1]
        mimetype = TYPES.get(suffix, "application/octet-stream")
        if suffix in (".js", ".mjs", ".css", ".html"):
            # surrogateescape: bytes that are not UTF-8 pass through unchanged
            text = minify(name, raw.decode(errors="surrogateescape"))
            raw = self._rewrite(name, text).encode(errors="surrogateescape")
        digest = hashlib.sha256(raw).hexdigest()
        asset = Asset(name, raw, mimetype, digest,
                      None if suffix == ".html" else hashed(name, digest))
        self.assets[name] = asset
        if asset.hashed_name:
            self.by_hashed[asset.hashed_name] = asset
        self._building.discard(name)
        return asset

    def url(self, name: str) -> str | None:
        """The hashed URL path of static file ``name``, if it has one."""
        target = self.asset(name)
        return f"/static/{target.hashed_name}" if target and target.hashed_name else None

    def _rewrite(self, name: str, text: str) -> str:
        text = ABSOLUTE.sub(lambda m: self.url(m.group(1)) or m.group(0), text)
        if name.endswith(".css"):
            text = CSS_URL.sub(lambda m: self._css_url(name, m), text)
        return text

    def _css_url(self, name: str, match: re.Match) -> str:
        """``url(fonts/X.woff2)`` in a style sheet -> ``url(fonts/X.<hash>.woff2)``."""
        ref = match.group(2)
        if ref.startswith(("/", "data:", "#")) or ":" in ref.split("/")[0]:
            return match.group(0)
        path, mark, rest = ref.partition("?") if "?" in ref else ref.partition("#")
        target = self.asset(posixpath.normpath(posixpath.join(posixpath.dirname(name), path)))
        if not target or not target.hashed_name:
            return match.group(0)
        relative = posixpath.join(posixpath.dirname(path), posixpath.basename(target.hashed_name))
        return f"url({match.group(1)}{relative}{mark}{rest}{match.group(1)})"

    def find(self, name: str) -> tuple[Asset, bool] | None:
        """The asset a ``/static/<name>`` request asks for, and whether that
        name is its hashed one (cacheable forever)."""
        if name in self.by_hashed:
            return self.by_hashed[name], True
        if name in self.assets:
            return self.assets[name], False
        older = HASHED.match(name)  # another version's hashed name
        if older and (plain := older["stem"] + older["ext"]) in self.assets:
            return self.assets[plain], False
        return None


def _files(root: Path) -> list[Path]:
    """Files under ``root``; dot-named ones (the stamp, the cache) are not served."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, n) for n in names if not n.startswith(".")]
    return found


def _signature(root: Path) -> tuple:
    return tuple(sorted(_stat(path) for path in _files(root)))


def _stat(path: Path) -> tuple[str, int, int]:
    try:
        stat = path.stat()
    except OSError:  # gone since the listing: the next look sees it
        return str(path), 0, -1
    return str(path), stat.st_mtime_ns, stat.st_size


class _Current:
    """The manifest of STATIC, rebuilt when its files change."""

    def __init__(self) -> None:
        self.manifest: Manifest | None = None
        self.signature: tuple = ()
        self.looked = 0.0

    def get(self, root: Path) -> Manifest:
        if self.manifest and self.manifest.root == root and \
                time.monotonic() - self.looked < RECHECK:
            return self.manifest
        self.looked = time.monotonic()
        signature = _signature(root)
        if not self.manifest or self.manifest.root != root or signature != self.signature:
            self.manifest, self.signature = Manifest(root), signature
        return self.manifest


_current = _Current()


def current(root: Path | None = None) -> Manifest:
    """The manifest of the static files (STATIC) as they are now."""
    return _current.get(root or STATIC)


# ------------------------------------------------------------------ responses

def _respond(request: Request, asset: Asset, body: bytes | None = None,
             cache: str = SHORT, status: int = 200) -> Response:
    """``asset`` (or a page made from it, ``body``) in the best coding the
    browser accepts; conditional on its ETag."""
    coding, data = None, body if body is not None else asset.body
    if body is None and asset.compressible:
        coding = next((c for c in CODINGS if request.accept_encodings.quality(c) > 0
                       and asset.encoded(c) is not None), None)
        data = asset.encoded(coding) if coding else asset.body
    response = Response(data, status=status, mimetype=asset.mimetype,
                        headers={"Cache-Control": cache})
    if asset.compressible:
        response.vary.add("Accept-Encoding")
    if coding:
        response.headers["Content-Encoding"] = coding
    if body is None:
        response.set_etag(asset.digest[:32] + (f"-{coding}" if coding else ""))
        if status == 200:
            response.make_conditional(request)
    return response


def static_response(request: Request, name: str) -> Response | None:
    """``/static/<name>``: None when there is no such file."""
    found = current().find(name)
    if found is None:
        return None
    asset, by_hash = found
    cache = "no-cache" if asset.hashed_name is None else IMMUTABLE if by_hash else SHORT
    return _respond(request, asset, cache=cache)


def page_response(request: Request, name: str, insert: str | None = None,
                  status: int = 200) -> Response:
    """An HTML page of static/ with its references rewritten; ``insert``
    replaces its ``<!--SHARED-->`` mark (a page of its own: not compressed,
    it is made per request)."""
    asset = current().assets[name]
    body = None if insert is None else \
        asset.body.decode().replace("<!--SHARED-->", insert).encode()
    return _respond(request, asset, body, cache="no-cache", status=status)


# ------------------------------------------------------------------ the build

def build(root: Path | None = None, cache: Path | None = None) -> tuple[int, int, int]:
    """Compress every compressible body at the best levels into ``cache``
    (named by content, so a stale entry is never used) and drop what no
    current body needs. Returns (files, bytes, brotli bytes)."""
    manifest, cache = Manifest(root or STATIC), cache or CACHE
    cache.mkdir(exist_ok=True)
    wanted, raw, packed = set(), 0, 0
    for asset in manifest.assets.values():
        if not asset.compressible:
            continue
        raw += len(asset.body)
        for coding in CODINGS:
            path = cache / f"{asset.digest}.{coding}"
            wanted.add(path.name)
            if not path.exists():
                temp = path.with_suffix(".tmp")
                temp.write_bytes(compress(asset.body, coding, BUILD_LEVELS[coding]))
                temp.replace(path)
        packed += len(_smaller(asset.body, (cache / f"{asset.digest}.br").read_bytes())
                      or asset.body)
    for stale in cache.iterdir():
        if stale.name not in wanted:
            stale.unlink()
    return len(manifest.assets), raw, packed


def main() -> None:
    files, raw, packed = build()
    print(f"static files: {files} ({raw // 1024} KB of text, {packed // 1024} KB "
          f"with brotli), compressed into {CACHE}")
