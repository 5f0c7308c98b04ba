"""The gateway's durable store: SQLite (WAL) through SQLAlchemy Core.

All of the gateway's SQL is in this package, as typed tasks
(``tasks``: ``ReadTask`` / ``WriteTask``, one dataclass per kind of work)
that the rest of the gateway hands to ``Store.async_read`` / ``async_write``.

- ``store``: ``Store`` — one writer thread with group commit, a reader pool
- ``tasks``: the task base types (and which ones need no savepoint)
- ``schema``: the tables, reflected from the migrations (import them to write queries)
- ``migration``: numbered migrations (the one source of the tables' shape), backups,
  corrupt files moved aside
- ``submissions``: storing a crew's envelope (``StoreEnvelope``)
- ``form_versions``: every form version received, the one an activity is filled against
- ``activities``: dispatch / check-out, recall, check-in
- ``users``: the users central pushed; ``sessions``: sign-in attempts and sessions
- ``outbox``: which envelopes go up next, and what central answered
- ``attachments``: blobs arriving from devices and going up to central
- ``queries``: the reads behind the LAN API and the heartbeat; ``site``: the Site screen's
- ``maintenance``: retention; ``meta``: the key/value table
- ``files``: checks on a database file the store has not opened (restore, replica guard)
- ``blobs``: attachment files on disk
"""

from gateway.store.migration import StoreError
from gateway.store.store import DB_FILENAME, Store, StoreClosedError, open_store

__all__ = ["DB_FILENAME", "Store", "StoreClosedError", "StoreError", "open_store"]
