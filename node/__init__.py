"""The like-service process: config, store, durability, HTTP API and CLI."""
