"""``stackblaze``: the command-line client of the HTTP API (it talks to nothing else)."""
