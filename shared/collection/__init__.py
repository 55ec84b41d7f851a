"""Collection: usage sources, validation, the collector (watermark, idempotent hourly
writes, catch-up) and the daily rollup."""
