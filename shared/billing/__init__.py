"""Billing: what is owed per event key, work items, the ledger, the commerce client and
its events and tokens, the reporter and reconciliation."""
