"""Template engine: sandboxed Jinja2 environment, code maps, routes."""
