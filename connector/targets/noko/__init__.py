"""Noko: the v2 invoice API client and the pusher that creates, updates and cancels invoices."""
