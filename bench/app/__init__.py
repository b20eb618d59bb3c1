"""trio-djws benchmark project (``python bench/app/manage.py serve``)."""
