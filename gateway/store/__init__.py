"""The gateway's durable store: SQLite (WAL) through SQLAlchemy Core.

- ``schema``: the tables, reflected from the migrations (import them to write queries)
- ``store``: ``Store`` — one writer thread with group commit, a reader pool
- ``migration``: numbered migrations (the one source of the tables' shape), backups,
  corrupt files moved aside
- ``ops``: writes that arrive from central (dispatch, recall, users)
- ``submissions``: storing a crew's envelope (``store_envelope``, in the writer)
- ``form_versions``: every form version received, the one an activity is filled against
- ``queries``: the reads behind the LAN API and the heartbeat
- ``blobs``: attachment files on disk
"""

from gateway.store.migration import StoreError
from gateway.store.store import DB_FILENAME, Store, StoreClosedError, open_store

__all__ = ["DB_FILENAME", "Store", "StoreClosedError", "StoreError", "open_store"]
