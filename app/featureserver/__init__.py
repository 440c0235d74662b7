"""HTTP feature endpoint: online feature values for other services."""
