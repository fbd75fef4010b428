"""What makes a write durable: the write-ahead log, its on-disk format, write levels, identity."""
