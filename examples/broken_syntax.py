# DELIBERATELY BROKEN: this module contains a SyntaxError on purpose.
# Tests use it to check that ferricorn reports import failures of the
# application module cleanly (and does not crash-loop). Do not "fix" it.

def app(environ, start_response)   # <- missing colon: SyntaxError
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]
