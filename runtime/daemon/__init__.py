"""diffgemma.runtime.daemon: the daemon process (HTTP server, client adapters, scheduler, lifecycle)."""
