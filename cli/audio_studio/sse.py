"""Server-Sent Events read from an HTTP body: (event, data) pairs; comments (keep-alives) are skipped."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def server_sent(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    event, data = "message", []
    async for line in lines:
        if not line:  # a blank line ends an event
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)
