"""A minimal Django project serving the stock trio_djws handlers for the benchmark."""
