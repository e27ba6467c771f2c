"""The PostgreSQL wire protocol door (default port 15432): BI tools and drivers connect as to PostgreSQL 15.

`server.py` speaks the protocol (startup, TLS, SCRAM, simple and extended query, cursors, cancel) and runs
statements through the frontend (`frontend.py`: sessions, catalog emulation, semantic SQL);
`types.py` decodes parameters and encodes Arrow results; `auth.py` holds SCRAM; `messages.py` the bytes.
"""

from server.pgwire.server import PgConfig, PgServer, ServerThread

__all__ = ["PgConfig", "PgServer", "ServerThread"]
