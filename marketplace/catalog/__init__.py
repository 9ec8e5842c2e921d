"""Categories, products, supplier offers, bulk listing and search."""
