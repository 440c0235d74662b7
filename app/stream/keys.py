"""Every Redis key of the stream: the producers' (python -m jobs replay) and the scorer's."""

from __future__ import annotations

from app.stream.core.config import Settings as StreamSettings


class StreamKeys:
    """Every key of one stream's shards. All keys of shard ``i`` share the hash tag ``{i}``: one slot, so
    one script may touch them together on a Redis Cluster, and shards spread over the nodes."""

    def __init__(self, settings: StreamSettings) -> None:
        self.s = settings

    def events(self, shard: int) -> str:
        return f"{self.s.stream}:{{{shard}}}"

    def decisions(self, shard: int) -> str:
        return f"{self.s.output_stream}:{{{shard}}}"

    def dead_letters(self, shard: int) -> str:
        return f"{self.s.dead_letter_stream}:{{{shard}}}"

    def decision(self, shard: int, event_id: str) -> str:
        return f"{self.s.output_stream}:{{{shard}}}:{event_id}"

    def dead_marker(self, shard: int, entry_id: str) -> str:
        return f"{self.s.dead_letter_stream}:{{{shard}}}:{entry_id}"

    def shard_of(self, entity: int) -> int:
        return entity % self.s.shards
