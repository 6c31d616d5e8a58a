"""Helpers shared by the stub's tests: settings for a test stub and the handle fixtures yield."""

from __future__ import annotations

from dataclasses import dataclass

from devstack import Endpoints
from stigmer_cli.client import StigmerClient
from stigmer_stub.app import RunningStub
from stigmer_stub.settings import (
    GrpcSettings,
    MongoSettings,
    Settings,
    TemporalSettings,
    WorkflowSettings,
)


@dataclass(frozen=True)
class Stub:
    running: RunningStub
    settings: Settings
    client: StigmerClient

    @property
    def address(self) -> str:
        return self.running.address

    @property
    def runner_queue(self) -> str:
        return self.settings.temporal.runner_task_queue


def stub_settings(stack: Endpoints, *, database: str, suffix: str) -> Settings:
    # model_validate by field name: independent of the environment the tests run in.
    return Settings(
        log_level="WARNING",
        grpc=GrpcSettings.model_validate({"port": 0, "shutdown_grace_seconds": 0.5}),
        mongo=MongoSettings.model_validate({"uri": stack.mongodb_uri, "database": database}),
        temporal=TemporalSettings.model_validate(
            {
                "address": stack.temporal_address,
                "namespace": stack.temporal_namespace,
                "workflow_task_queue": f"stub-workflows-{suffix}",
                "runner_task_queue": f"fake-runner-{suffix}",
                "cancel_wait_seconds": 20,
            }
        ),
        # Short timeouts keep the failure paths fast; two ExecuteGraphton attempts show retries.
        workflow=WorkflowSettings.model_validate(
            {
                "ensure_thread_timeout_seconds": 5,
                "execute_timeout_seconds": 30,
                "execute_heartbeat_seconds": 5,
                "execute_schedule_to_start_seconds": 30,
                "execute_attempts": 2,
            }
        ),
    )
