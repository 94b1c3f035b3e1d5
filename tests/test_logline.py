"""The one log line format (salvusctl/logline.py), no processes."""

from __future__ import annotations

import io
import logging

import pytest

from salvusctl import logline


@pytest.fixture
def written():
    stream = io.StringIO()
    logline.setup("web7", frozenset({"s3cr3t-value-of-ours"}), stream)
    root = logging.getLogger()
    level = root.level
    yield stream
    for handler in [h for h in root.handlers if isinstance(h.formatter, logline.LineFormatter)]:
        root.removeHandler(handler)
    root.setLevel(level)


def test_a_line_carries_time_program_host_pid_level_context_and_message(written):
    logline.say("worker0: added", session="9f3c", browser="b r|x")
    line = logline.parse(written.getvalue())
    assert line["program"] == "web7" and line["level"] == "INFO" and line["pid"] > 0
    assert line["context"] == {"session": "9f3c", "browser": "b_r_x"}
    assert line["message"] == "worker0: added"
    assert len(line["time"]) == len("2026-11-30T01:45:10.123456Z")


def test_secrets_are_masked_by_value_and_by_shape(written):
    logline.say("dsn host=h password=pw1 user=u; url postgresql://u:pw2@h/db; "
                "key s3cr3t-value-of-ours")
    message = logline.parse(written.getvalue())["message"]
    assert "pw1" not in message and "pw2" not in message and "s3cr3t" not in message
    assert message.count(logline.MASK) == 3


def test_a_message_stays_one_line_and_reads_back_whole(written):
    logline.say("first\nsecond | third")
    assert written.getvalue().count("\n") == 1
    assert logline.parse(written.getvalue())["message"] == "first\nsecond | third"


def test_a_sink_that_is_gone_costs_the_line_not_the_program(written):
    written.close()
    logline.say("into a closed stream")  # no exception


def test_lines_of_other_formats_are_not_ours():
    assert logline.parse("2026-11-30 01:45:10.123 UTC [42] LOG:  database system is ready") \
        is None
    assert logline.parse("Traceback (most recent call last):") is None


def test_the_secrets_of_files_are_found(tmp_path):
    dsn = tmp_path / "dsn"
    dsn.write_text("host=/run port=1 dbname=d user=u password=abcdefgh12\n")
    key = tmp_path / "web.key_secret"
    key.write_text('curve\n    public-key = "pub"\n    secret-key = "Zsecretkey0123456789"\n')
    assert logline.secrets_in(dsn, key, tmp_path / "missing") == {"abcdefgh12",
                                                                  "Zsecretkey0123456789"}
