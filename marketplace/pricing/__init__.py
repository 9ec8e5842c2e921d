"""Pricing: purchase records, imports, cross-trust price variance, savings and charts
(DESIGN §6). See docs/pricing.md."""
