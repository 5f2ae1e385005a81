"""PostgreSQL, as Django runs it, with a health check that costs no round trip while nothing is
waiting on the connection's socket (``base.DatabaseWrapper.is_usable``)."""
