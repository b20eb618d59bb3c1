"""The Django Channels 4 side of the benchmark: the same app protocol as ``bench/app``."""
