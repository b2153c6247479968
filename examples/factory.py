"""Application-factory example.

Used as ``factory:create_app()`` or ``factory:create_app("hi")``: the server
calls ``create_app`` with the given literal arguments and serves the WSGI
application it returns.
"""


def create_app(greeting="factory"):
    """Return a WSGI app that responds with `greeting` as text/plain."""
    body = greeting.encode("utf-8")

    def app(environ, start_response):
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    return app
