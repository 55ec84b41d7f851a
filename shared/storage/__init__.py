"""Table storage and queues: the storage account, transactional partition writes, usage
rows, the hour manifest, the watermark, subscriptions, the quarantine and the queue
encoding. Knows nothing of how rows are collected, billed or queried."""
