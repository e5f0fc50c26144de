"""What the API and the proxy share on the wire: problem responses, the request guard,
the middlewares, JSON in and out, the typed application keys."""
