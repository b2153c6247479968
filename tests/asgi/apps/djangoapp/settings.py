"""Minimal Django + Channels settings for ferricorn's ASGI tests."""

SECRET_KEY = "ferricorn-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoapp.urls"
INSTALLED_APPS = ["channels"]
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
ASGI_APPLICATION = "djangoapp.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
