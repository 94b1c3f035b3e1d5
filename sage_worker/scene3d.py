"""Sage's 3D graphics as the page shows them: a scene for its three.js viewer,
or a picture where the browser has no WebGL.

The scene is JSON made from Sage's own description for three.js
(``Graphics3d.threejs_repr``): surfaces (vertices and faces), lines, points
and texts with their colours, plus the bounding box. The page draws it with
its own viewer (web/static/viewer3d.js) in a sandboxed frame: a session's
data never runs as code in the page. The picture is Sage's own (Tachyon).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from sage_worker.protocol import SCENE_MIME

KINDS = ("surface", "line", "point", "text")


def display(graphics: Any, webgl: bool) -> tuple[dict[str, str], list]:
    if not webgl:
        return {}, [("image/png", picture(graphics), None)]
    return {"text/plain": repr(graphics), SCENE_MIME: scene(graphics)}, []


def scene(graphics: Any) -> str:
    """The scene's JSON: {"bounds": [[x, y, z], [x, y, z]], "objects": [[kind,
    fields], ...]}, coordinates rounded to 6 significant digits (plenty on a
    screen, and a third of the text)."""
    low, high = graphics.bounding_box()
    objects = [[kind, _fields(kind, fields)]
               for kind, fields in graphics.threejs_repr(graphics.default_render_params())
               if kind in KINDS]
    return json.dumps({"bounds": [_round(low), _round(high)], "objects": objects},
                      separators=(",", ":"))


def _fields(kind: str, fields: dict) -> dict:
    out = {k: fields[k] for k in ("color", "opacity", "linewidth", "size", "text",
                                  "fontSize") if k in fields}
    if kind == "surface":
        out["vertices"] = [_g(v[axis]) for v in fields["vertices"] for axis in "xyz"]
        out["faces"] = [list(face) for face in fields["faces"]]
    elif kind == "line":
        out["points"] = [_g(c) for point in fields["points"] for c in point]
    elif kind == "point":
        out["point"] = _round(fields["point"])
    elif kind == "text":
        out["position"] = [_g(fields[axis]) for axis in "xyz"]
    return out


def _g(value: Any) -> float:
    return float(f"{float(value):.6g}")


def _round(point: Any) -> list[float]:
    return [_g(c) for c in point]


def picture(graphics: Any) -> bytes:
    """A PNG of the scene, by Sage's own ray tracer."""
    handle, path = tempfile.mkstemp(suffix=".png")
    os.close(handle)
    try:
        graphics.save(path, figsize=5)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)
