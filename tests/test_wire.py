"""Browser protocol validation (web/wire.py), no processes."""

from __future__ import annotations

import json

import pytest

from web import wire


@pytest.mark.parametrize("frame, code", [
    (b"\x00\x01", "malformed"),
    ("not json", "malformed"),
    ("[1]", "malformed"),
    ('{"type": "fly"}', "unknown_type"),
    ('{"no": "type"}', "unknown_type"),
    ('{"type": {}}', "unknown_type"),
    ('{"type": ["execute"]}', "unknown_type"),
    ('{"type": "execute", "code": "1"}', "bad_field"),
    ('{"type": "execute", "cell": 5, "code": "1"}', "bad_field"),
    ('{"type": "execute", "cell": "", "code": "1"}', "bad_field"),
    ('{"type": "execute", "cell": "' + "c" * 65 + '", "code": "1"}', "bad_field"),
    ('{"type": "open", "last_seq": -1}', "bad_field"),
    ('{"type": "open", "last_seq": true}', "bad_field"),
    ('{"type": "open", "last_seq": "3"}', "bad_field"),
    ('{"type": "execute", "cell": "c", "code": "1", "typeset": 1}', "bad_field"),
    ('{"type": "execute", "cell": "c", "code": "1", "language": "fortran"}', "bad_field"),
    ('{"type": "complete", "cell": "c"}', "bad_field"),
    ('{"type": "complete", "cell": "c", "code": 3}', "bad_field"),
    (json.dumps({"type": "execute", "cell": "c", "code": "x" * (wire.MAX_CODE + 1)}),
     "too_large"),
    ("x" * (wire.MAX_FRAME + 1), "too_large"),
    ('{"type": "layout"}', "bad_field"),
    ('{"type": "layout", "cells": {"c": "1"}}', "bad_field"),
    ('{"type": "layout", "cells": [{"cell": "c"}]}', "bad_field"),
    ('{"type": "layout", "cells": [{"cell": "c", "code": "1", "x": 1}]}', "bad_field"),
    ('{"type": "layout", "cells": [{"cell": "c", "code": "1"}, {"cell": "c", "code": ""}]}',
     "bad_field"),
    (json.dumps({"type": "layout", "cells": [{"cell": f"c{i}", "code": ""}
                                             for i in range(wire.MAX_CELLS + 1)]}),
     "bad_field"),
])
def test_bad_messages_are_refused_with_a_code(frame, code):
    with pytest.raises(wire.WireError) as caught:
        wire.parse(frame)
    assert caught.value.code == code and caught.value.message


@pytest.mark.parametrize("frame", [
    '{"type": "open"}', '{"type": "open", "session": "abc", "last_seq": 7}',
    '{"type": "execute", "cell": "c1", "code": "2+2"}', '{"type": "interrupt"}',
    '{"type": "restart"}', '{"type": "ping"}',
    '{"type": "execute", "cell": "c1", "code": "2^3", "typeset": true, "language": "python"}',
    '{"type": "complete", "cell": "c1", "code": "fact"}',
    '{"type": "layout", "cells": []}',
    '{"type": "layout", "cells": [{"cell": "c2", "code": "%md\\n# Title"}, '
    '{"cell": "c1", "code": ""}]}',
])
def test_good_messages_parse(frame):
    assert wire.parse(frame) == json.loads(frame)


def test_errors_are_sent_as_protocol_errors():
    text = wire.error(wire.WireError("quota", "too many"))
    assert json.loads(text) == {"type": "protocol_error", "code": "quota",
                                "message": "too many"}


def test_characters_travel_as_themselves_and_a_lone_surrogate_as_an_escape():
    assert wire.encode({"text": "\U0001F600"}) == '{"text":"\U0001F600"}'
    lone = wire.encode({"text": "a\ud800b"})
    assert lone.isascii() and json.loads(lone) == {"text": "a\ud800b"}
