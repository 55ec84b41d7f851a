"""Chargeback: price sheets (model, files, store), the rating engine, statements and their
store. A pipeline beside collection and billing: imports only ``shared.storage`` and
``shared.core``; the usage API (``shared.query``) serves what it computes and stores."""
