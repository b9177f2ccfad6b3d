"""A well-behaved service: runs until SIGTERM, then exits 0. Starts a child of its own,
to show that a stop reaches the whole process group."""
import signal
import subprocess
import sys
import time

tag = sys.argv[1] if len(sys.argv) > 1 else "service"
child = subprocess.Popen(["sleep", "1000"])
signal.signal(signal.SIGTERM, lambda *_: (child.terminate(), sys.exit(0)))
print(f"cooperative: up ({tag})", flush=True)
while True:
    time.sleep(1)
