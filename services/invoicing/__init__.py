"""Invoicing: reverse invoices (反向开票), red-letter corrections, seller caps, tax exports."""
