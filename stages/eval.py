"""The eval stage (not built yet: it says so and exits 1)."""

STAGE = None
