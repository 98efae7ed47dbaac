"""The attach stream demuxer: whatever way the engine cuts its frames, lines come out whole."""

from __future__ import annotations

import io
import itertools
import random

import pytest

from pipes_docker.demux import FrameDemuxer, LineSink

from .fakes import STDERR, STDOUT, frame


class Recorder:
    """A stream target that remembers each write separately."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    @property
    def text(self) -> str:
        return "".join(self.writes)


def demuxer() -> tuple[FrameDemuxer, Recorder, Recorder, LineSink, LineSink]:
    out, err = Recorder(), Recorder()
    out_sink, err_sink = LineSink([out]), LineSink([err])
    return FrameDemuxer({STDOUT: out_sink, STDERR: err_sink}), out, err, out_sink, err_sink


STREAM = (
    frame(STDOUT, b"hello\nwor")
    + frame(STDERR, b"first problem\n")
    + frame(STDOUT, b"ld\n")
    + frame(STDOUT, b"")
    + frame(STDERR, "caf\u00e9 \U0001f600\n".encode())
)


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_lines_are_whole_wherever_the_stream_is_cut(cut: int) -> None:
    demux, out, err, _, _ = demuxer()

    demux.feed(STREAM[:cut])
    demux.feed(STREAM[cut:])

    assert out.text == "hello\nworld\n"
    assert err.text == "first problem\ncaf\u00e9 \U0001f600\n"
    assert not demux.mid_frame


def test_lines_are_whole_when_the_stream_arrives_one_byte_at_a_time() -> None:
    demux, out, err, _, _ = demuxer()

    for i in range(len(STREAM)):
        demux.feed(STREAM[i : i + 1])

    assert out.writes == ["hello\n", "world\n"]
    assert err.writes == ["first problem\n", "caf\u00e9 \U0001f600\n"]


def test_multibyte_character_split_across_frames_decodes() -> None:
    demux, out, _, _, _ = demuxer()
    emoji = "\U0001f600".encode()  # four bytes, one per frame

    demux.feed(frame(STDOUT, b"caf\xc3") + frame(STDOUT, b"\xa9 "))
    demux.feed(b"".join(frame(STDOUT, emoji[i : i + 1]) for i in range(4)))
    demux.feed(frame(STDOUT, b"\n"))

    assert out.text == "caf\u00e9 \U0001f600\n"


def test_invalid_utf8_is_replaced_not_raised() -> None:
    demux, out, _, _, _ = demuxer()

    demux.feed(frame(STDOUT, b"bad \xff\xfe byte\n") + frame(STDOUT, b"next\n"))

    assert out.text == "bad \ufffd\ufffd byte\nnext\n"


def test_truncated_utf8_at_the_end_is_replaced_on_close() -> None:
    demux, out, _, out_sink, _ = demuxer()

    demux.feed(frame(STDOUT, b"cut \xc3"))
    out_sink.close()

    assert out.text == "cut \ufffd\n"


def test_last_line_without_newline_is_emitted_on_close() -> None:
    demux, out, err, out_sink, err_sink = demuxer()

    demux.feed(frame(STDOUT, b"done\nno newline") + frame(STDERR, b"also none"))
    assert out.text == "done\n"
    assert err.text == ""

    out_sink.close()
    err_sink.close()

    assert out.text == "done\nno newline\n"
    assert err.text == "also none\n"


def test_close_after_a_complete_line_adds_nothing() -> None:
    demux, out, _, out_sink, _ = demuxer()

    demux.feed(frame(STDOUT, b"done\n"))
    out_sink.close()

    assert out.writes == ["done\n"]


def test_stdout_and_stderr_reach_only_their_own_targets() -> None:
    demux, out, err, _, _ = demuxer()

    demux.feed(frame(STDOUT, b"to stdout\n") + frame(STDERR, b"to stderr\n"))

    assert out.text == "to stdout\n"
    assert err.text == "to stderr\n"


def test_every_target_of_a_sink_gets_the_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    sink = LineSink([first, second])

    sink.write(b"one\ntwo\n")

    assert first.getvalue() == second.getvalue() == "one\ntwo\n"


def test_tail_lines_returns_the_last_lines_in_order() -> None:
    sink = LineSink()
    sink.write("".join(f"line {i}\n" for i in range(100)).encode())
    sink.write(b"unfinished")

    assert sink.tail_lines(3) == ["line 98", "line 99", "unfinished"]
    assert LineSink().tail_lines(5) == []


def test_tail_lines_drops_the_line_cut_short_by_the_tail_buffer() -> None:
    sink = LineSink()
    sink.write(b"x" * 10_000 + b"\n" + b"".join(b"%05d\n" % i for i in range(10_000)))

    tail = sink.tail_lines(10_000)

    assert tail[-1] == "09999"
    assert all(len(line) == 5 for line in tail)  # no fragment of a longer line


def test_long_line_without_newline_is_emitted_in_bounded_pieces() -> None:
    out = Recorder()
    sink = LineSink([out])
    chunk = b"y" * 65536
    total = 8 * 1024 * 1024

    for _ in range(total // len(chunk)):
        sink.write(chunk)
    written_before_close = len(out.text)
    sink.close()

    assert written_before_close >= total - (1 << 20) - len(chunk)
    assert max(len(piece) for piece in out.writes) <= (1 << 20) + len(chunk) + 1
    assert out.text == "y" * total + "\n"


@pytest.mark.parametrize("stream_id", [0, 3, 255])
def test_frames_of_unknown_streams_are_dropped(stream_id: int) -> None:
    demux, out, err, _, _ = demuxer()

    demux.feed(frame(STDOUT, b"a\n") + frame(stream_id, b"stdin echo\n") + frame(STDERR, b"b\n"))

    assert out.text == "a\n"
    assert err.text == "b\n"


def test_stream_ending_inside_a_frame_is_detectable() -> None:
    demux, _, _, _, _ = demuxer()

    demux.feed(frame(STDOUT, b"abcdef")[:10])

    assert demux.mid_frame


def test_twenty_megabytes_arrive_byte_exact() -> None:
    rng = random.Random(7)
    words = ["alpha", "\u00e9t\u00e9", "\u4e2d\u6587", "\U0001f680", "x" * 300, "", "\t"]
    expected = {STDOUT: bytearray(), STDERR: bytearray()}
    frames = bytearray()
    while len(frames) < 20 * 1024 * 1024:
        stream_id = rng.choice((STDOUT, STDERR))
        text = " ".join(rng.choices(words, k=rng.randint(1, 400))) + "\n"
        payload = text.encode()
        expected[stream_id] += payload
        # The engine cuts frames wherever its buffers end, inside lines and characters too.
        for piece in _random_pieces(rng, payload):
            frames += frame(stream_id, piece)
    out, err = io.StringIO(), io.StringIO()
    sinks = {STDOUT: LineSink([out]), STDERR: LineSink([err])}
    demux = FrameDemuxer(sinks)
    source = io.BytesIO(bytes(frames))

    while chunk := source.read(rng.randint(1, 1 << 16)):
        demux.feed(chunk)
    for sink in sinks.values():
        sink.close()

    assert out.getvalue().encode() == bytes(expected[STDOUT])
    assert err.getvalue().encode() == bytes(expected[STDERR])


def _random_pieces(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
