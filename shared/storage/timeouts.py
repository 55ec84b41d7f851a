"""How long the app waits on storage: one pair of timeouts for every client (tables, queues,
blobs). A storage call that takes longer is treated as a transient fault and retried by
``shared.core.retry``, which caps and names the retries."""

from __future__ import annotations

CONNECT_TIMEOUT = 5  # seconds to open a connection
READ_TIMEOUT = 30  # seconds to wait for an answer
