"""1 MiB streamed from a generator in 16 chunks of 64 KiB (Content-Length set)."""

CHUNK = 64 * 1024
COUNT = 16
TOTAL = CHUNK * COUNT
# Distinct content per chunk, so a checker can tell a reordered or repeated chunk.
CHUNKS = [bytes((i * 31 + j) & 0xFF for j in range(256)) * (CHUNK // 256) for i in range(COUNT)]


def expected():
    return b"".join(CHUNKS)


def app(environ, start_response):
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(TOTAL))],
    )

    def body():
        for chunk in CHUNKS:
            yield chunk

    return body()
