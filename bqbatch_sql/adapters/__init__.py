"""Warehouse adapters: one per warehouse, chosen by the profile's `type`."""
