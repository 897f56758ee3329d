"""The dense CRF: a mean-field engine whose cost scales with the label count, and the calls built on it."""
