"""Product search behind one interface, with SQL (default) and Elasticsearch backends."""
