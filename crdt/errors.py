"""Every error the crdt package raises, under one root."""


class CRDTError(Exception):
    """Root of the errors raised by the crdt package."""


class CodecError(CRDTError, ValueError):
    """A buffer is corrupt, truncated, too large or of an unsupported type or version."""
