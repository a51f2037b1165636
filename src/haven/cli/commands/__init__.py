"""One module per command group, shaped like ``az backup``."""
