"""Semantic SQL: BI-style SQL over views and the `metrics` table, answered through metric queries."""
