"""How table transactions and queries reach storage: one interface, two transports.

``TablesTransport`` (``interface``) is what the app calls; ``sdk`` implements it with the
SDK's public calls and ``direct`` with the fast path, the one module that may touch the
SDK's private names; ``choice`` picks one per process from ``TABLES_TRANSPORT`` and the
installed versions.
"""

from shared.storage.transport.choice import tables_transport
from shared.storage.transport.interface import TablesTransport
from shared.storage.transport.operations import MAX_OPERATIONS, Operation

__all__ = ["MAX_OPERATIONS", "Operation", "TablesTransport", "tables_transport"]
