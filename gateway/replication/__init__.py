"""Continuous replication of the gateway database with litestream, by role.

- ``config``: litestream's configuration, generated from ``[replication]``.
- ``supervisor``: :class:`~gateway.replication.supervisor.Replicator` runs
  litestream as a child process, restarts it, guards the replica, measures lag.
- ``guard``: is the replica this database's? (refuse to overwrite a stranger's)
- ``pidfile``: the child's pid file, and stopping one a previous run left behind.
- ``logs``: litestream's log lines as (level, message).
- ``lag``: how old the oldest change the replica lacks is (file and S3 replicas).
- ``blob_mirror``: attachment files copied next to the database replica.
- ``metrics``: the Prometheus collector.
- ``service``: the aiohttp ``cleanup_ctx`` and the status the API and heartbeat read.

See docs/replication.md.
"""
