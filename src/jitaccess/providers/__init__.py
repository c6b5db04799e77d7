"""Access providers: where access is really granted and taken away."""
