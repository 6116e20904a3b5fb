"""The traffic log: one record per flow, to JSON-lines files, SQLite or PostgreSQL.

``[plugins.trafficlog]`` (put ``trafficlog`` on the global chain to log every
flow, or on a route's chain)::

    [plugins.trafficlog]
    type = "file"                       # "file" | "database" | "both"
    directory = "logs"                  # JSON lines: logs/traffic-YYYY-MM-DD[.wW][.N].log
    max_file_bytes = 104857600          # then traffic-DATE.1.log, .2.log, ...; 0: no size rotation
    retention_days = 7                  # older files are deleted; 0 keeps all
    database = "sqlite:logs/traffic.db" # or "postgresql://user@host:5432/db"
    queue = 10000                       # records waiting per sink; beyond, dropped and counted
    batch = 500                         # records per write / transaction
    flush_interval_s = 1.0              # longest wait for a batch to fill
    headers = false                     # log request and response header fields
    redact = ["authorization", "proxy-authorization", "cookie", "set-cookie"]
    query = true                        # keep the query string in path
    include_decisions = true            # log flow.decisions

The record's fields are listed in :mod:`.record`, the SQL table in
:mod:`.schema`, file naming, rotation and retention in :mod:`.filesink`.
Bodies are never logged; header fields only with ``headers = true``, and the
values of the ``redact`` fields are then replaced by ``"[redacted]"``.

Logging never holds up a flow: ``trellis_flow_done`` copies a few fields
into a dict and appends it to a bounded queue per sink; a full queue drops
the record and counts it (``plugin.dropped``, metric
``traffic_log_dropped_records_total``), with a warning at most every 10 s. A
background writer writes batches in a worker thread; a failed write is
logged and its records counted as dropped, and the sink reopens or
reconnects later (:mod:`.writer`). On shutdown (SIGTERM) everything still
queued is written before the process exits, in a worker thread as well.

Under ``[server] workers = N`` each worker runs its own instance: file
sinks get a file per worker, while every worker writes the one SQLite file,
waiting (in its writer thread, up to 30 s a batch) while another holds the
write lock (:mod:`.sqlite`).

Reloads: sinks are process-wide and shared by every instance and
generation writing to the same place, so a reload keeps the same open file
or connection (no line lost or written twice). A reload that changes
``directory`` or ``database`` opens the new sink; the old one is drained and
closed once the old generation's last flow has ended. Other changed keys
apply to the shared sink from the reload on.

Metrics (with the ``metrics`` plugin): ``traffic_log_records_total{sink}``,
``traffic_log_dropped_records_total{sink}`` and
``traffic_log_write_duration_seconds{sink}`` (per batch).

Modules: :mod:`.config` (the table), :mod:`.record` (record building),
:mod:`.filesink` (files, rotation, retention), :mod:`.schema`,
:mod:`.sqlite` and :mod:`.postgres` (database sinks), :mod:`.writer` (queue,
writer task, sink registry), :mod:`.plugin` (hooks).

May import: .plugin, .config only (re-export).
"""

from __future__ import annotations

from .config import TrafficLogConfig
from .plugin import TrafficLogPlugin

__all__ = ["TrafficLogConfig", "TrafficLogPlugin"]
