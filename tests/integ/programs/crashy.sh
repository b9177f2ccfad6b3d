#!/bin/sh
# A service that crashes at once with the status it is given. A shell is up in a few
# milliseconds, well inside the agent's half second before it calls a process running,
# even on a loaded machine where an interpreter may take longer.
echo "crashy: giving up with status ${1:-1}"
exit "${1:-1}"
