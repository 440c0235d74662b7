"""Feature store: definitions as code, Parquet offline store, Redis online store, materialization,
point-in-time training data."""
