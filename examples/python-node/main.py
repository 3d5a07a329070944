"""Answers every GET with what a Node one-liner prints (Node at run time)."""
import os
import subprocess
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        out = subprocess.run(
            ["node", "-e", "console.log('Hello from python-node, node ' + process.version)"],
            capture_output=True,
            check=True,
        ).stdout
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
