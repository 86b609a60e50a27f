"""Text a message may carry: what PostgreSQL can store and a log line can show.

PostgreSQL refuses a NUL character in ``text`` and ``jsonb``, so one NUL in a brand or a
request id would fail the write of its whole batch, every time it is retried. Control
characters are refused at validation instead, where the message becomes a dead letter
(or the /predict a 422), and line breaks or terminal escapes cannot forge log lines.

>>> no_control_characters("Citroën C4")
'Citroën C4'
>>> no_control_characters("Cit\\x00roën")
Traceback (most recent call last):
...
ValueError: control characters (such as NUL, line breaks or escapes) are not allowed in text: 'Cit\\x00roën'
>>> sanitised("key\\x00")
'key\\ufffd'
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

MAX_ID = 2**63 - 1  # ids are PostgreSQL bigints: a larger one could never be stored
_CONTROL_CHARACTERS = r"\x00-\x1f\x7f"
_CONTROL = re.compile(f"[{_CONTROL_CHARACTERS}]")
NO_CONTROL_CHARACTERS = f"^[^{_CONTROL_CHARACTERS}]*$"  # the same rule, as a pattern (of an HTTP header)


def no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"control characters (such as NUL, line breaks or escapes) are not allowed in text: {value!r}")
    return value


def sanitised(text: str) -> str:
    """``text`` with each NUL replaced by U+FFFD, for text from outside that is stored
    anyway (a dead letter's key and reason)."""
    return text.replace("\x00", "\ufffd")


# A str without control characters; its JSON Schema says so with a pattern.
Label = Annotated[
    str, AfterValidator(no_control_characters), Field(json_schema_extra={"pattern": NO_CONTROL_CHARACTERS})
]
