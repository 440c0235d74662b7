"""The one error every online-store failure surfaces as, whichever client raised it."""


class OnlineStoreUnavailableError(Exception):
    """Redis cannot be reached within the configured timeout."""
