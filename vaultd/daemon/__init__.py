"""Running the daemon: the app factory, the server, its connections, systemd readiness."""
