"""Hostile bytes built around a valid JSON message, for the raw-bytes fuzzers
(tests/reliability/test_hostile_input.py).

:func:`hostile` gives one strategy per kind of hostility. Every kind but ``MUTATED`` is
malformed by construction, whatever hypothesis draws: not JSON (RFC 8259), or JSON that
breaks the message's contract. ``MUTATED`` (random edits of a valid message) may still
be valid.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MUTATED = "random edits of a valid message"
NAN = "NaN or Infinity (Python's parser takes them)"
SURROGATE = "a lone surrogate (Python's parser takes it)"


def _dumps(message: Any) -> bytes:
    return json.dumps(message, ensure_ascii=False).encode()


def _with_raw(message: dict, path: tuple[str, ...], raw: str) -> bytes:
    """``message`` as JSON text with the value at ``path`` replaced by the raw text ``raw``
    (which need not be JSON)."""
    marker = "\u2603MARKER\u2603"
    copy = json.loads(json.dumps(message))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = marker
    return _dumps(copy).replace(json.dumps(marker, ensure_ascii=False).encode(), raw.encode("utf-8", "surrogatepass"))


def hostile(message: dict, numbers: list[tuple[str, ...]], texts: list[tuple[str, ...]], ids: list[tuple[str, ...]]):
    """``(kind, bytes)``: malformed variants of ``message`` (a valid message as a dict).
    ``numbers`` are paths of its numeric fields, ``texts`` of its text fields (free text,
    not categories), ``ids`` of its integer ids (or any bounded integers)."""
    valid = _dumps(message)
    number = st.sampled_from(numbers)
    text = st.sampled_from(texts)
    letters = st.text(alphabet="abcdefghij", min_size=1, max_size=8)

    def repeated_name(path_and_junk: tuple[tuple[str, ...], str]) -> bytes:
        """The name appears twice in its object, the second time with a value of the wrong
        type: the last one wins in every parser that takes repeated names."""
        path, junk = path_and_junk
        first = _with_raw(message, path, "__FIRST__")
        text_of = first.decode("utf-8")
        name = json.dumps(path[-1])
        return text_of.replace(
            f"{name}: __FIRST__", f"{name}: {json.dumps(_get(message, path))}, {name}: {json.dumps('x' + junk)}"
        ).encode()

    def mutated(edits: list[tuple[int, int, int]]) -> bytes:
        data = bytearray(valid)
        for kind, where, byte in edits:
            at = where % (len(data) or 1)
            if kind == 0 and data:
                data[at] = byte
            elif kind == 1:
                data.insert(at, byte)
            elif data:
                del data[at]
        return bytes(data)

    return {
        "random bytes": st.binary(max_size=300).filter(lambda b: not b.lstrip().startswith((b"{", b"["))),
        NAN: st.tuples(number, st.sampled_from(["NaN", "Infinity", "-Infinity"])).map(lambda t: _with_raw(message, *t)),
        "a number beyond a double's range": st.tuples(
            number, st.sampled_from(["1e400", "-1e400", "1.5e309", "9" * 400 + ".0"])
        ).map(lambda t: _with_raw(message, *t)),
        SURROGATE: st.tuples(text, st.sampled_from(["\\ud800", "\\udfff", "x\\ud83dy"])).map(
            lambda t: _with_raw(message, t[0], '"' + t[1] + '"')
        ),
        "bad UTF-8": st.tuples(
            text, st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
        ).map(lambda t: _with_raw(message, t[0], '"BADBYTES"').replace(b"BADBYTES", t[1])),
        "UTF-16 or UTF-32": st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32"]).map(
            lambda codec: json.dumps(message).encode(codec)
        ),
        "a byte-order mark": st.sampled_from([b"\xef\xbb\xbf", b"\xef\xbb\xbf \n"]).map(lambda bom: bom + valid),
        "deep nesting": st.tuples(st.integers(202, 1500), st.sampled_from([b"[]", b"{}"])).map(
            lambda t: (
                b'{"a": ' * (t[0] // 2) + b"[" * (t[0] - t[0] // 2) + b"]" * (t[0] - t[0] // 2) + b"}" * (t[0] // 2)
                if t[1] == b"{}"
                else b"[" * t[0] + b"]" * t[0]
            )
        ),
        "cut short": st.integers(1, len(valid) - 1).map(lambda cut: valid[:cut]),
        "an id beyond a bigint": st.tuples(
            st.sampled_from(ids), st.sampled_from([2**63, 10**20, -(2**64), 10**300])
        ).map(lambda t: _with_raw(message, t[0], str(t[1]))),
        "a control character in text": st.tuples(
            text, st.sampled_from(["\x00", "\x1b[31m", "\n", "\x7f"]), letters
        ).map(lambda t: _with_raw(message, t[0], json.dumps(t[2] + t[1] + t[2]))),
        "a repeated name, the last value wrong": st.tuples(st.sampled_from(numbers + ids), letters).map(repeated_name),
        MUTATED: st.lists(
            st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4
        ).map(mutated),
    }


def _get(message: dict, path: tuple[str, ...]) -> Any:
    value: Any = message
    for key in path:
        value = value[key]
    return value


def draw(strategies: dict[str, st.SearchStrategy], per_kind: int) -> list[tuple[str, bytes]]:
    """``(kind, bytes)``: up to ``per_kind`` distinct examples of each strategy (fewer where
    it has fewer), the same on every run."""
    return [(kind, example) for kind, strategy in strategies.items() for example in _examples(strategy, per_kind)]


def _examples(strategy: st.SearchStrategy, count: int) -> list:
    found: list = []

    @settings(
        max_examples=count, database=None, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(strategy)
    def collect(example) -> None:
        found.append(example)

    collect()
    return found
