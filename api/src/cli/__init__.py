"""The command line: `bifrost up | api | worker | init` (`main.py`) and the
supervisor `up` runs its processes under (`supervisor.py`)."""
