"""json.loads for bodies from outside: hostile nesting is an unreadable body (ValueError), not a crash.

The stdlib parser recurses per nesting level, so ``[[[[…]]]]`` a hundred thousand deep raises RecursionError,
which no ``except ValueError`` around a parse expects: it would be a 500 for one request (and a failed job for
a vendor page) instead of the 400 or the logged vendor error the caller gives for any other unreadable body.
"""

from __future__ import annotations

import json
from typing import Any


def loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
