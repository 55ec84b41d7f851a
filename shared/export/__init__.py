"""Exports for BI tools and billing adapters: FOCUS 1.2 Cost and Usage files in Blob storage,
in the Cost Management export layout (or FinOps hubs' ingestion layout).

A presenter beside ``shared.query``: reads storage, core and the pipelines (rating prices
the rows); never imports ``shared.query``, which never imports it. Modules: ``focus`` (the
row mapping, units, services), ``files`` (Parquet and gzip CSV writers, streamed in row
groups and bounded parts), ``exporter`` (a run: paths, manifest written last, replacement
of the previous run), ``configs`` (export configurations in a table).
"""
