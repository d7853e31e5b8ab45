"""The embedded simulator: one deterministic world served as the four vendor APIs."""
