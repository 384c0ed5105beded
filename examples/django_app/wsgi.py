"""``gunicorn --chdir examples/django_app wsgi:application --workers 4``"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
application = get_wsgi_application()
