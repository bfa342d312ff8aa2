"""A plain HTTP/1.1 server with no OpenTelemetry in it: what odiglet traces with eBPF.

Usage: http_app.py PORT (0: any; the port is printed as `listening PORT`).
GET /hello answers 200, GET /fail 500, GET /chain?next=URL calls URL and answers with its
status; anything else 404.
"""
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/chain":
            next_url = urllib.parse.parse_qs(query)["next"][0]
            try:
                with urllib.request.urlopen(next_url) as response:
                    status = response.status
            except urllib.error.HTTPError as e:
                status = e.code
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, body = {"/hello": (200, b"hello\n"), "/fail": (500, b"failed\n")}.get(
            path, (404, b"not found\n")
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
