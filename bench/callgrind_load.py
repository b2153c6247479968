import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
path = sys.argv[3] if len(sys.argv) > 3 else "/"
s = socket.create_connection(("127.0.0.1", port))
req = ("GET %s HTTP/1.1\r\nHost: localhost:%d\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n" % (path, port)).encode()
for i in range(n):
    s.sendall(req)
    buf=b""
    while True:
        buf += s.recv(65536)
        h, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            cl = [l for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")]
            if cl and len(body) >= int(cl[0].split(b":")[1]): break
