"""The pipeline's status for operators: the objectives of docs/operations.md read from
stored state (reader), kept per hour (history), shown as one document and screen (view),
sent as gauges (observer) and served to the admin (api)."""
