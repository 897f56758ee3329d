"""The dense CRF: its settings, a mean-field engine whose cost scales with the label count, the calls on it."""
