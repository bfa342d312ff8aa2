"""A forking HTTP server, as socketserver.ForkingMixIn runs one: the parent accepts each
connection and a child it forks then serves it. No OpenTelemetry in it.

Usage: forking_app.py PORT [MARKER] (0: any; the port is printed as `listening PORT`).
GET / answers 200 with the pid of the child that served it.
"""
import sys
from http.server import HTTPServer
from socketserver import ForkingMixIn

from pid_handler import Handler


class Server(ForkingMixIn, HTTPServer):
    pass


server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", server.server_address[1], flush=True)
server.serve_forever()
