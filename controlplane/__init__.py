"""Meterline control plane: catalog, customers, usage, invoicing, config sync."""
