"""About 4 KB of JSON, serialised with json.dumps on every request."""

import json

# Fixed data; json.dumps(DATA) is exactly 4096 bytes (SIZE).
DATA = {
    "status": "ok",
    "page": 1,
    "per_page": 20,
    "cursor": "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeeab",
    "items": [
        {
            "id": i,
            "name": f"item-{i:04d}",
            "price": round(9.99 + i * 1.25, 2),
            "in_stock": i % 3 != 0,
            "tags": ["alpha", "beta", "gamma"][: 1 + i % 3],
            "stock": (i * 37) % 101,
            "sku": f"SKU-{i * 7919:08d}",
        }
        for i in range(30)
    ],
}

SIZE = len(json.dumps(DATA).encode())


def app(environ, start_response):
    body = json.dumps(DATA).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
