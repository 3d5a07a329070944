"""Serves the libpq version psycopg2 was built against and loads at run time.

psycopg2 has no wheels: pip compiles it against libpq-dev in the build, and
the runtime needs libpq.so.5. It is listed in requirements/base.txt, which
requirements.txt includes.
"""

import os
from http.server import BaseHTTPRequestHandler, HTTPServer

import psycopg2


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"Hello from python-psycopg2, libpq {psycopg2.__libpq_version__}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
