"""The benchmark harness: measures the CRDT core and, later, real clusters against peer designs."""
