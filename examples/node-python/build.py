# Runs at build time: writes the page the Node server answers with.
import sys

with open("greeting.txt", "w") as f:
    f.write(f"Hello from node-python (built by Python {sys.version_info.major})\n")
