"""The pure domain of reverse invoicing (反向开票): tax configuration by effective date (`tax_config`), the
taxes of an invoice, red-letter offsets and the month settlement (`tax`), invoice numbers (`numbering`).
No I/O here, except `tax_config.load_rule_book`, which reads the rule file once at start-up."""
