"""Pieces every service and job shares: JSON logging, S3 access."""
