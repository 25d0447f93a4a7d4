"""`bra ablate`'s library half, pure Python: variants, shared settings, records, the table and its plot."""
