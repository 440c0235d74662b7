"""Training-serving skew and drift monitoring: reference profiles (profile), drift statistics (drift),
what serving records (capture, schema, servedlog) and its metrics (metrics). docs/operations.md,
"Drift and skew monitoring", has the design and the runbooks."""
