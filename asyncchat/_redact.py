"""Secrets out of the text we show: URL credentials and secret-looking query values.

Error messages and logs quote URLs, ours and those inside aiohttp's own messages
(a proxy's `http://user:password@host`, a query with `?key=...`). Every such text
passes through `redact` before a user can see it.
"""

from __future__ import annotations

import re

__all__ = ["redact"]

# scheme://user:password@  or  scheme://token@
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"]+@")
# ?api_key=...  &token=...  &sig=...  (the name contains a secret-sounding word)
_SECRET_QUERY = re.compile(
    r"(?i)([?&;][^=&\s'\"]*(?:key|token|secret|password|passwd|sig|signature|credential|auth)"
    r"[^=&\s'\"]*=)[^&#\s'\"]+"
)


def redact(text: str) -> str:
    """`text` with URL credentials and secret-looking query values replaced by `***`."""
    if "@" in text:
        text = _USERINFO.sub(r"\1***@", text)
    if "=" in text:
        text = _SECRET_QUERY.sub(r"\1***", text)
    return text
