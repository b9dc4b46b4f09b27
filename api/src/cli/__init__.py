"""The command line: the processes (`bifrost up | api | worker | init`, in
`serve.py`, with the supervisor `up` runs them under in `supervisor.py`) and
the commands that talk to a running API over HTTP (`remote.py` and the
modules it names). `main.py` parses the arguments and hands over."""
