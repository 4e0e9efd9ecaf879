"""Dagster layer: thin assets over charattr_core."""
