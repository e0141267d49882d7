"""Session-wide fixtures: real servers on free loopback ports (see tests/servers.py)."""

from tests.servers import *  # noqa: F401,F403
