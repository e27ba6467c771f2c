"""The event loop the doors run on: uvloop where it is installed (Linux, macOS), else asyncio's own.

Why: measured with psycopg against `phloem serve`, uvloop's C transports take ~15% off a PostgreSQL-wire
round trip (1000 x SELECT 1: 124 -> 107 ms; PostgreSQL itself 75-80 ms on the same machine).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # Windows, or installed without it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine):
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
