"""The framework modules: Flax (linen, nnx) and Haiku classes generated per operator."""
