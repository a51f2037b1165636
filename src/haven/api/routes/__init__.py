"""API routes, one module per resource; each route only translates HTTP to a service call."""
