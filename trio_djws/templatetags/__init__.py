"""Template tags: ``{% load trio_djws %}``."""
