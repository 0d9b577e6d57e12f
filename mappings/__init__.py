"""Built-in mapping templates, routes and code maps (data package)."""
