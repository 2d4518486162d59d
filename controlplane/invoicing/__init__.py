"""Invoices: the lifecycle (gathering -> draft -> issued -> paid | payment_failed | void).

``lifecycle`` owns the transitions and the I/O: it finds an invoice's segments (a
subscription's part of the period, and late windows of issued periods) and snapshots what each
rate card is rated on; ``lines`` builds the lines from that snapshot with pure code (no
database, no clock: tests/unit/controlplane/test_invoice_lines.py); ``describe`` words a line;
``storage`` holds invoice rows, frozen lines and which events each invoice billed; ``totals``
sums every customer's open invoice and ``monthly`` the closed ones per month (the console's).
"""
