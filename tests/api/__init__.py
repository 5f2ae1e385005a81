"""The HTTP API, its tokens and OpenAPI contract, and the CLI built on it."""
