#!/usr/bin/env python
"""The example Django project (``pip install -e '.[django]' djangorestframework``).

``python examples/django_app/manage.py runserver`` serves it on the memory store;
``REDIS_URL=redis://localhost:6379/0 gunicorn --chdir examples/django_app wsgi:application
--workers 4`` on Redis. ``manage.py check`` runs the ratelimit system checks."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
