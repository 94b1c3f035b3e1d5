"""Interacts inside a session: ``@interact`` and its controls.

``@interact`` on a function reads a control from each parameter's default:
a control object (``slider``, ``input_box``, ``checkbox``, ``selector``,
``color_selector``), or Sage's shorthands: ``(1, 100)`` or ``(1, 100, 1)`` a
slider, a list a selector, a bool a checkbox, anything else an input box. The
child announces the controls (message kind ``interact``) and runs the function
with the defaults; every later run gets the values the browser sends.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

_ids = itertools.count(1)


# Lower-case class names: they are what Sage users type (slider(1, 10), ...).


class Control:
    kind = "control"

    def __init__(self, default: Any = None, label: str | None = None):
        self.default = default
        self.label = label

    def spec(self, name: str) -> dict:
        return {"name": name, "type": self.kind, "label": self.label or name,
                "value": self.to_browser(self.default)}

    def to_browser(self, value: Any) -> Any:
        return value

    def convert(self, value: Any, namespace: dict) -> Any:
        return value

    def initial(self, namespace: dict) -> Any:
        """The value of the first run, before the browser sent any."""
        return self.default


class slider(Control):
    kind = "slider"

    def __init__(self, vmin, vmax=None, step_size=None, default=None, label=None):
        if isinstance(vmin, list | tuple | range) and vmax is None:
            values = list(vmin)  # a slider over a list of values
        else:
            if vmax is None:
                vmin, vmax = 0, vmin
            if step_size is None and not all(isinstance(v, int) for v in (vmin, vmax)):
                # A continuous range (Sage's (1, 10) has Integer ends, (0, pi)
                # symbolic ones): a hundred steps shown as decimals, as Sage
                # does, not as the exact 127/100 of the arithmetic.
                values = [float(vmin + (vmax - vmin) * i / 100) for i in range(101)]
            else:
                step = 1 if step_size is None else step_size
                count = round((vmax - vmin) / step) + 1
                values = [vmin + i * step for i in range(max(count, 1))]
        self.values = values
        index = 0 if default is None else min(range(len(values)),
                                              key=lambda i: abs(_number(values[i]) -
                                                                _number(default)))
        super().__init__(index, label)

    def spec(self, name: str) -> dict:
        return {**super().spec(name), "min": 0, "max": len(self.values) - 1, "step": 1,
                "labels": [_slider_label(v) for v in self.values]}

    def convert(self, value: Any, namespace: dict) -> Any:
        return self.values[min(max(int(value), 0), len(self.values) - 1)]

    def initial(self, namespace: dict) -> Any:
        return self.values[self.default]


class input_box(Control):
    kind = "input_box"

    def __init__(self, default="", label=None, type=None):
        super().__init__(default, label)
        self.type = type

    def to_browser(self, value: Any) -> Any:
        return value if isinstance(value, str) else repr(value)

    def convert(self, value: Any, namespace: dict) -> Any:
        if self.type is str or (self.type is None and isinstance(self.default, str)):
            return str(value)
        result = eval(str(value), namespace)  # an expression, in the session
        return self.type(result) if self.type is not None else result


class checkbox(Control):
    kind = "checkbox"

    def __init__(self, default=True, label=None):
        super().__init__(bool(default), label)

    def convert(self, value: Any, namespace: dict) -> Any:
        return bool(value)


class selector(Control):
    kind = "selector"

    def __init__(self, values, label=None, default=None, buttons=False):
        self.values = list(values)
        index = self.values.index(default) if default in self.values else 0
        super().__init__(index, label)

    def spec(self, name: str) -> dict:
        return {**super().spec(name), "choices": [_short(v) for v in self.values]}

    def convert(self, value: Any, namespace: dict) -> Any:
        return self.values[min(max(int(value), 0), len(self.values) - 1)]

    def initial(self, namespace: dict) -> Any:
        return self.values[self.default]


class color_selector(Control):
    kind = "color"

    def __init__(self, default="#1d3557", label=None):
        super().__init__(str(default), label)

    def convert(self, value: Any, namespace: dict) -> Any:
        text = str(value)
        if not (len(text) == 7 and text[0] == "#"):
            raise ValueError(f"not a color: {text!r}")
        return text


def control_for(default: Any) -> Control:
    """Sage's shorthands for controls."""
    if isinstance(default, Control):
        return default
    if isinstance(default, bool):
        return checkbox(default)
    if isinstance(default, tuple) and len(default) in (2, 3) and all(
            _is_number(v) for v in default):
        return slider(*default)
    if isinstance(default, list | tuple):  # choices (a tuple of 2-3 numbers is a slider)
        return selector(default)
    if isinstance(default, range):
        return slider(default)
    if default is inspect.Parameter.empty:
        return input_box("", type=None)
    return input_box(default)


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return not isinstance(value, bool | str)
    except (TypeError, ValueError):
        return False


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _slider_label(value: Any) -> str:
    """A position's label: 0.0314159, not 0.031415926535897934."""
    if isinstance(value, float) and len(repr(value)) > 8:
        return f"{value:.6g}"
    return _short(value)


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Interacts:
    """The session's registry: announce, then run with defaults or given values."""

    def __init__(self, namespace: dict, announce, run):
        self.namespace = namespace  # the session's: input boxes evaluate in it
        self.announce = announce  # announce(interact_id, controls)
        self.run = run  # run(interact_id, function, kwargs): shows the output
        self.registered: dict[str, tuple[Any, dict[str, Control]]] = {}

    def decorator(self, function=None, **_options):
        if function is None:  # @interact(...) with options: not needed by controls here
            return lambda f: self.decorator(f)
        controls = {name: control_for(parameter.default) for name, parameter in
                    inspect.signature(function).parameters.items()}
        interact_id = f"i{next(_ids)}"
        self.registered[interact_id] = (function, controls)
        self.announce(interact_id, [c.spec(name) for name, c in controls.items()])
        first = {name: c.initial(self.namespace) for name, c in controls.items()}
        self.run(interact_id, function, first)
        return function

    def update(self, interact_id: str, values: dict) -> None:
        if interact_id not in self.registered:
            raise KeyError(f"no interact {interact_id!r} in this session (was it restarted?)")
        function, controls = self.registered[interact_id]
        kwargs = {}
        for name, control in controls.items():
            value = values.get(name, control.to_browser(control.default))
            kwargs[name] = control.convert(value, self.namespace)
        self.run(interact_id, function, kwargs)


NAMES = {"slider": slider, "input_box": input_box, "checkbox": checkbox,
         "selector": selector, "color_selector": color_selector}
