"""Personal health budgets: care plans, an append-only ledger that can never overspend,
approvals and statements (DESIGN §7, docs/budgets.md)."""
