"""A service that ignores SIGTERM, with a child that ignores it too."""
import signal
import subprocess
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
print("stubborn: up, ignoring SIGTERM", flush=True)
while True:
    time.sleep(1)
