"""A service that crashes at once with the status it is given."""
import sys

status = int(sys.argv[1]) if len(sys.argv) > 1 else 1
print(f"crashy: giving up with status {status}", flush=True)
sys.exit(status)
