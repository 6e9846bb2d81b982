"""Open, verify, describe and validate any bioimage.io model package (spec 0.4 or 0.5)."""
