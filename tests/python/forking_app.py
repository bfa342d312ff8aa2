"""A forking HTTP server, as socketserver.ForkingMixIn runs one: the parent accepts each
connection and a child it forks then serves it. No OpenTelemetry in it.

Usage: forking_app.py PORT [MARKER] (0: any; the port is printed as `listening PORT`).
GET / answers 200 with the pid of the child that served it.
"""
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ForkingMixIn


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"{os.getpid()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(ForkingMixIn, HTTPServer):
    pass


server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
