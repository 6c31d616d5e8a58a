"""Readiness probes, each the cheapest real request a client of that server would make.

A probe returns None when the server answers and a short reason when it does not yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import httpx
import pymongo
import pymongo.errors
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from temporalio.api.workflowservice.v1 import request_response_pb2 as wf
from temporalio.api.workflowservice.v1 import service_pb2_grpc as wf_grpc

from devstack.errors import StackError
from devstack.process import ServerProcess

Probe = Callable[[], str | None]

_PROBE_TIMEOUT = 1.0
_RETRY_SECONDS = 0.1


def temporal_probe(address: str, namespace: str, ui_url: str) -> Probe:
    """The frontend serves the namespace workers will poll, and the Web UI answers."""

    def probe() -> str | None:
        with grpc.insecure_channel(address) as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)
            try:
                stub.DescribeNamespace(
                    wf.DescribeNamespaceRequest(namespace=namespace), timeout=_PROBE_TIMEOUT
                )
            except grpc.RpcError as err:
                return f"frontend: {err.code()}"
        try:
            status = httpx.get(ui_url, timeout=_PROBE_TIMEOUT).status_code
        except httpx.HTTPError as err:
            return f"web ui: {type(err).__name__}"
        return None if status == 200 else f"web ui: HTTP {status}"

    return probe


def mongo_probe(uri: str) -> Probe:
    def probe() -> str | None:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            uri,
            serverSelectionTimeoutMS=int(_PROBE_TIMEOUT * 1000),
            connectTimeoutMS=int(_PROBE_TIMEOUT * 1000),
        )
        try:
            client.admin.command("ping")
        except pymongo.errors.PyMongoError as err:
            return f"ping: {type(err).__name__}"
        finally:
            client.close()
        return None

    return probe


def redis_probe(host: str, port: int) -> Probe:
    def probe() -> str | None:
        client = redis.Redis(
            host=host,
            port=port,
            socket_timeout=_PROBE_TIMEOUT,
            socket_connect_timeout=_PROBE_TIMEOUT,
            # The client's own retries back off for seconds; the wait loop retries instead.
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
        except redis.RedisError as err:
            return f"ping: {type(err).__name__}"
        finally:
            client.close()
        return None

    return probe


def wait_healthy(proc: ServerProcess, probe: Probe, timeout: float, abort: threading.Event) -> None:
    """Block until `probe` passes; StackError with the server's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    reason: str | None = "not probed yet"
    while True:
        if abort.is_set():
            raise StackError(f"{proc.name}: start aborted")
        if not proc.alive():
            raise StackError(
                f"{proc.name} exited with code {proc.returncode} while starting "
                f"({' '.join(proc.argv)}).{_tail(proc)}"
            )
        reason = probe()
        if reason is None:
            return
        if time.monotonic() >= deadline:
            raise StackError(
                f"{proc.name} did not become healthy within {timeout:g}s "
                f"(last probe: {reason}).{_tail(proc)}"
            )
        abort.wait(_RETRY_SECONDS)


def _tail(proc: ServerProcess) -> str:
    tail = proc.log_tail()
    if not tail:
        return f" Its log ({proc.log_path}) is empty."
    return f" Last lines of {proc.log_path}:\n{tail}"
