"""Billing: what is owed per event key, work items, the ledger (and its carry index), the
commerce client and its events and tokens, what the endpoint's daily rows prove, the
reporter and reconciliation."""
