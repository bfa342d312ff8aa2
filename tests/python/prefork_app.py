"""A pre-fork HTTP server, as gunicorn runs one: the parent binds, then forks workers that
accept on the shared socket. No OpenTelemetry in it.

Usage: prefork_app.py PORT [MARKER] (0: any; the port is printed as `listening PORT`).
GET / answers 200 with the pid of the worker that served it.
"""
import ctypes
import os
import signal
import sys
from http.server import HTTPServer

from pid_handler import Handler

WORKERS = 2

server = HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
print("listening", server.server_address[1], flush=True)
for _ in range(WORKERS):
    if os.fork() == 0:
        # A worker ends with its parent, however the parent ends.
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        server.serve_forever()
        os._exit(0)
for _ in range(WORKERS):
    os.wait()
