"""The example apps wrapped in wsgiref.validate.validator, to be served by ferricorn.

The validator checks both sides of PEP 3333 while a real server runs the app: the environ,
wsgi.input, wsgi.errors and start_response that ferricorn provides, and how the app uses them.
Run with PYTHONWARNINGS=error::wsgiref.validate.WSGIWarning so that warnings fail too.
"""
from wsgiref.validate import validator

import hello
import spec

hello_app = validator(hello.app)
spec_app = validator(spec.app)
