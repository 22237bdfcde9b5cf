"""The data the API returns, as the exporter keeps it, and the query it sends.

Enumerations are the documented values of the API reference (DescribeInvocationResults, 2014-05-26).
The API may add values; code that reads a record keeps unknown values as they are.
"""

from __future__ import annotations

NON_TERMINAL_STATUSES: tuple[str, ...] = ("Pending", "Scheduled", "Running", "Stopping")
TERMINAL_STATUSES: tuple[str, ...] = (
    "Success",
    "Failed",
    "Error",
    "Timeout",
    "Cancelled",
    "Terminated",
    "Aborted",
    "Invalid",
    "Stopped",
)
INVOCATION_STATUSES: tuple[str, ...] = NON_TERMINAL_STATUSES + TERMINAL_STATUSES

INVOKE_RECORD_STATUSES: tuple[str, ...] = (
    "Running",
    "Finished",
    "Success",
    "Failed",
    "PartialFailed",
    "Stopped",
    "Stopping",
)

ERROR_CODES: tuple[str, ...] = (
    "InstanceNotExists",
    "InstanceReleased",
    "InstanceNotRunning",
    "CommandNotApplicable",
    "AccountNotExists",
    "DirectoryNotExists",
    "BadCronExpression",
    "ClientNotRunning",
    "ClientNotResponse",
    "ClientIsUpgrading",
    "ClientNeedUpgrade",
    "DeliveryTimeout",
    "ExecutionTimeout",
    "ExecutionException",
    "ExecutionInterrupted",
    "ExitCodeNonzero",
    "SecurityGroupRuleDenied",
    "TaskConcurrencyLimit",
)

OSS_OUTPUT_STATUSES: tuple[str, ...] = ("InProgress", "Finished", "Failed")
OSS_OUTPUT_ERROR_CODES: tuple[str, ...] = (
    "CloudAssistant.UnsupportedInvocationStatus",
    "CloudAssistant.ClientNeedUpgrade",
    "OSS.AccessDenied",
    "OSS.NoSuchBucket",
    "OSS.FileImmutable",
    "OSS.InvalidObjectName",
)

CONTENT_ENCODINGS: tuple[str, ...] = ("PlainText", "Base64")
