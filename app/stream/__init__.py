"""Streaming inference: a consumer-group worker that scores events from a Redis Stream.

See docs/streaming.md. ``python -m app.stream`` runs one scorer process.
"""
