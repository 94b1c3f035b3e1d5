"""The session child's output path on its own (sage_worker/output.py): what
user code writes, in the order it wrote it, as the messages the parent gets.
The same path runs in real session children in test_worker and test_isolation."""

from __future__ import annotations

import pytest

from sage_worker.output import OutputLimit, OutputStream, StreamFile, stdout_file


class Recorder:
    """The child's channel end: keeps what would be sent."""

    def __init__(self):
        self.messages: list[dict] = []

    def send(self, message: dict, blob: bytes | None = None) -> None:
        self.messages.append(message)

    def text(self, name: str = "stdout") -> str:
        return "".join(m["text"] for m in self.messages
                       if m["type"] == "stream" and m["name"] == name)


class NoPump:
    """Stands in for FdPump (which would take over this process's fds 1 and 2)."""

    def drain_if_ready(self) -> None:
        pass


@pytest.fixture
def sent():
    return Recorder()


def streams(sent: Recorder, cap: int = 10 ** 9):
    stream = OutputStream(sent.send, cap)
    stream.begin("e1")
    return stream, stdout_file(stream), StreamFile(stream, "stderr", 2, NoPump())


def test_a_hundred_thousand_prints_arrive_whole_in_a_few_chunks(sent):
    stream, out, _ = streams(sent)
    for i in range(10 ** 5):
        print(i, file=out)
    stream.send({"type": "done", "status": "ok"})
    assert sent.text() == "".join(f"{i}\n" for i in range(10 ** 5))
    assert len(sent.messages) < 20  # coalesced, not one message per line
    assert sent.messages[-1] == {"type": "done", "status": "ok"}


def test_stderr_and_results_keep_their_place_between_prints(sent):
    stream, out, err = streams(sent)
    print("a", file=out)
    err.write("b\n")
    print("c", file=out)
    stream.send({"type": "result", "data": {"text/plain": "d"}})
    print("e", file=out)
    stream.flush()
    got = [(m.get("name"), m.get("text") or m["data"]["text/plain"]) for m in sent.messages]
    assert got == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c\n"), (None, "d"),
                   ("stdout", "e\n")]


def test_a_character_split_between_two_chunks_arrives_whole(sent):
    stream, out, _ = streams(sent)
    out.write("x" * (64 * 1024 - 1) + "é" * 10)  # é is two bytes: the first straddles
    stream.flush()
    assert sent.text() == "x" * (64 * 1024 - 1) + "é" * 10


def test_bytes_written_to_the_buffer_arrive_as_text(sent):
    stream, out, _ = streams(sent)
    out.buffer.write("naïve\n".encode())
    stream.flush()
    assert sent.text() == "naïve\n"


def test_past_the_cap_the_writer_is_stopped_and_the_rest_dropped(sent):
    stream, out, _ = streams(sent, cap=100_000)
    with pytest.raises(OutputLimit):
        for _ in range(10 ** 5):
            print("0123456789", file=out)
    stream.send({"type": "done", "status": "limit"})
    assert len(sent.text()) == 100_000
    assert "Output limit of 100000 bytes" in sent.messages[-2]["text"]
    stream.begin("e2")  # what the C buffer held is not the next execution's
    print("next", file=out)
    stream.flush()
    assert sent.messages[-1]["text"] == "next\n"


def test_an_interacts_text_is_tagged_and_the_cells_is_not(sent):
    stream, out, _ = streams(sent)
    print("cell", file=out)
    stream.retag("i1")
    print("inside", file=out)
    stream.flush()
    stream.retag(None)
    print("after", file=out)
    stream.flush()
    assert [(m["text"], m.get("interact")) for m in sent.messages] == [
        ("cell\n", None), ("inside\n", "i1"), ("after\n", None)]


def test_text_written_between_executions_belongs_to_none(sent):
    stream, out, _ = streams(sent)
    stream.send({"type": "done", "status": "ok"})
    stream.execution = None
    print("stray", file=out)
    stream.begin("e2")
    print("mine", file=out)
    stream.flush()
    assert sent.text() == "mine\n"


def test_draining_moves_stdouts_waiting_text_to_the_stream_without_sending(sent):
    # What the pump does before reading descriptors 1 and 2: text printed
    # before C code wrote comes first.
    stream, out, _ = streams(sent)
    print("first", file=out)
    stream.drain_buffered()
    assert stream.pending == [["stdout", "first\n", None]] and sent.messages == []
