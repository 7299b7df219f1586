"""Image sources, splits and batch transforms."""
