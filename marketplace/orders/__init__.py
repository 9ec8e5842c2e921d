"""Quotes, orders split by supplier, supplier orders, payments (purchase order, budget, card)."""
