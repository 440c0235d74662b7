"""Every Redis key of the stream: the producers' (python -m jobs replay), the scorer's and the prediction
service's decision lookup (GET /v1/decisions/{event_id}). Plain names in, so that each reads its own
settings; nothing here imports a settings class."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamKeys:
    """Every key of one stream's shards. All keys of shard ``i`` share the hash tag ``{i}``: one slot, so
    one script may touch them together on a Redis Cluster, and shards spread over the nodes."""

    stream: str = "transactions"
    output_stream: str = "decisions"
    dead_letter_stream: str = "dead-letters"
    shards: int = 1

    def events(self, shard: int) -> str:
        return f"{self.stream}:{{{shard}}}"

    def decisions(self, shard: int) -> str:
        return f"{self.output_stream}:{{{shard}}}"

    def dead_letters(self, shard: int) -> str:
        return f"{self.dead_letter_stream}:{{{shard}}}"

    def decision(self, shard: int, event_id: str) -> str:
        return f"{self.output_stream}:{{{shard}}}:{event_id}"

    def lease(self, shard: int) -> str:
        """The shard's owner: the consumer that holds its lease (app/stream/leases.py)."""
        return f"{self.stream}:{{{shard}}}:owner"

    def failures(self, shard: int) -> str:
        """Hash: entry id -> why its last delivery failed (kept until it is decided or dead-lettered)."""
        return f"{self.dead_letter_stream}:{{{shard}}}:failures"

    def dead_marker(self, shard: int, entry_id: str) -> str:
        return f"{self.dead_letter_stream}:{{{shard}}}:{entry_id}"

    def shard_of(self, entity: int) -> int:
        return entity % self.shards
