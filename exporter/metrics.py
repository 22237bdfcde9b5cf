"""The metric contract: every family the exporter exposes, in one table.

Each :class:`MetricSpec` gives a family's name, type, unit, help text, label names and the label
values that are exposed before anything happened (pre-initialised, value 0), so that an alert's
``increase()`` sees the first event. The collector builds its families from this table,
``docs/metrics.md`` is generated from it (``python docs/generate_metrics.py``; a test fails when
the committed file is stale), and the alert and dashboard generators take metric names and status
groups from here.

Label keys are :class:`~typing.NamedTuple` classes whose field names are the label names.

Which series are pre-initialised (issue 13: no series that can never move):

* ``invocation_results_finished_total``: only the ``InvocationStatus`` x ``ErrorCode`` pairs the
  API produces (:data:`FINISHED_PAIRS`, each with the sentence of the API reference it comes from).
  A pair the API produces beyond that table still gets its series, from its first event on.
* ``invocation_duration_seconds``: only the statuses of runs that started
  (:data:`STARTED_STATUSES`): Aborted, Cancelled and Invalid runs have no ``StartTime``.

Success has explicit label values (issue 14): ``code="ok"`` for an API call that succeeded and
``error_code="none"`` (``oss_output_error_code="none"``) for a run (delivery) without an error code.

This module imports only the API layer (``exporter.ecs``), so any module may import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

from exporter.ecs.errors import FAILURE_REASONS
from exporter.ecs.models import (
    ERROR_CODES,
    INVOCATION_STATUSES,
    OSS_OUTPUT_ERROR_CODES,
    OSS_OUTPUT_STATUSES,
)

PREFIX = "aliyun_cloudassistant_"

SUCCESS_CODE = "ok"
"""``code`` of ``api_requests_total`` for an API call that succeeded."""
NO_ERROR_CODE = "none"
"""``error_code`` / ``oss_output_error_code`` of a run or delivery without an error code."""
OTHER = "other"
"""The label value that API values beyond the caps fold into."""
MAX_LABEL_VALUE_CHARS = 128
"""Longest label value taken from the API; a longer value is counted under :data:`OTHER`."""
MAX_UNKNOWN_VALUES = 20
"""Undocumented values a label admits per target; later ones are counted under :data:`OTHER`."""

DURATION_BUCKETS: tuple[float, ...] = (
    1,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    21600,
    86400,
)
"""Buckets of ``invocation_duration_seconds`` (seconds)."""
API_DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Buckets of ``api_request_duration_seconds`` (seconds). A try ends at ``api.timeout_seconds``
(default 10): longer ones, with a raised timeout, are in ``+Inf``."""


# --- label keys ------------------------------------------------------------------------------


class TargetKey(NamedTuple):
    """The labels every per-target series carries."""

    account: str
    region_id: str


class StatusKey(NamedTuple):
    invocation_status: str


class ErrorCodeKey(NamedTuple):
    error_code: str


class FinishedKey(NamedTuple):
    invocation_status: str
    error_code: str


class OssStatusKey(NamedTuple):
    oss_output_status: str


class OssDeliveryKey(NamedTuple):
    oss_output_status: str
    oss_output_error_code: str


class ReasonKey(NamedTuple):
    reason: str


class CodeKey(NamedTuple):
    code: str


class CommandKey(NamedTuple):
    command_id: str
    command_name: str
    invocation_status: str


class TargetInfoKey(NamedTuple):
    """How a target is reached; never a secret."""

    endpoint_kind: str
    """``public``, ``vpc`` (``ecs-vpc.<region>.aliyuncs.com``) or ``custom`` (configured)."""
    credential_source: str
    """The credentials' ``source`` (``static``, ``environment``, ``ecs_ram_role``, ``oidc_role``,
    ``default``), with ``+assume_role`` when a RAM role is assumed on top."""


class BuildInfoKey(NamedTuple):
    version: str
    revision: str
    """The VCS revision the image was built from (``unknown`` when not set at build)."""
    python_version: str


class ShardFigures(NamedTuple):
    """Which shard this process is and how many targets it owns (see ``exporter.sharding``)."""

    shard: int
    total_shards: int
    owned_targets: int
    configured_targets: int


class MovedAsideKey(NamedTuple):
    reason: str


STATE_MOVE_REASONS: tuple[str, ...] = ("not_sqlite", "corrupt", "foreign", "newer_schema")
"""Why a state file was found unusable and moved aside."""

TARGET_LABELS: tuple[str, ...] = TargetKey._fields
ENDPOINT_KINDS: tuple[str, ...] = ("public", "vpc", "custom")


# --- what the API produces -------------------------------------------------------------------


class ProducedPair(NamedTuple):
    """A status x ErrorCode pair of a finished run the API produces, and why we think so."""

    key: FinishedKey
    source: str
    """The sentences of the DescribeInvocationResults reference that pair them."""


_ABORTED = 'Aborted: "Failed to send the command to the instance";'
_INVALID = 'Invalid: "The specified command type or parameter is invalid";'
# (status, ErrorCode, what the reference says), the ErrorCode descriptions quoted in short.
_PAIR_TABLE: tuple[tuple[str, str, str], ...] = (
    ("Success", NO_ERROR_CODE, 'ErrorCode "Empty: The command ran normally."'),
    ("Failed", "ExitCodeNonzero", 'Failed: "the exit code is not 0"; "non-zero exit code".'),
    ("Timeout", "ExecutionTimeout", 'Timeout: "The command execution timed out."'),
    ("Error", "ExecutionException", 'Error: "An exception occurred during command execution".'),
    ("Terminated", NO_ERROR_CODE, 'Terminated: "terminated during execution" (by a user).'),
    ("Terminated", "ExecutionInterrupted", '"terminated during execution"; "was interrupted".'),
    ("Cancelled", NO_ERROR_CODE, 'Cancelled: "The command was never started." (no code).'),
    ("Stopped", NO_ERROR_CODE, "Stopped by StopInvocation (no ErrorCode describes it)."),
    ("Aborted", "ClientNotRunning", f'{_ABORTED} "Agent is not running".'),
    ("Aborted", "ClientNotResponse", f'{_ABORTED} "Agent is not responding".'),
    ("Aborted", "ClientIsUpgrading", f'{_ABORTED} "Agent is being upgraded".'),
    ("Aborted", "ClientNeedUpgrade", f'{_ABORTED} "Agent needs to be upgraded".'),
    ("Aborted", "DeliveryTimeout", f'{_ABORTED} "The command delivery timed out".'),
    ("Aborted", "SecurityGroupRuleDenied", f'{_ABORTED} "security group rules denied access".'),
    ("Aborted", "InstanceNotRunning", f'{_ABORTED} "The instance was not running".'),
    ("Aborted", "InstanceReleased", f'{_ABORTED} "The instance was released".'),
    ("Aborted", "TaskConcurrencyLimit", f'{_ABORTED} "concurrent task executions exceeded".'),
    ("Invalid", "CommandNotApplicable", f'{_INVALID} "not applicable to the specified instance".'),
    ("Invalid", "AccountNotExists", f'{_INVALID} "The specified username ... does not exist".'),
    ("Invalid", "DirectoryNotExists", f'{_INVALID} "The specified directory does not exist".'),
    ("Invalid", "BadCronExpression", f'{_INVALID} "The specified cron expression is invalid".'),
    ("Invalid", "InstanceNotExists", f'{_INVALID} "The specified instance does not exist".'),
)


FINISHED_PAIRS: tuple[ProducedPair, ...] = tuple(
    ProducedPair(FinishedKey(status, code), source) for status, code, source in _PAIR_TABLE
)
"""Every pair pre-initialised in ``invocation_results_finished_total``, with its source."""

STARTED_STATUSES: tuple[str, ...] = (
    "Success",
    "Failed",
    "Error",
    "Timeout",
    "Terminated",
    "Stopped",
)
"""Terminal statuses of runs that started (they have a ``StartTime``, hence a duration).
Aborted (never sent), Invalid (refused before sending) and Cancelled ("never started") runs
have none."""

FAILURE_STATUSES: tuple[str, ...] = ("Failed", "Error", "Timeout", "Aborted", "Invalid")
"""Terminal statuses that mean the run did not do its job (what failure ratios count)."""
AGENT_ERROR_CODES: tuple[str, ...] = (
    "ClientNotRunning",
    "ClientNotResponse",
    "ClientIsUpgrading",
    "ClientNeedUpgrade",
)
"""ErrorCodes that say the Cloud Assistant agent on the instance cannot take commands."""
INSTANCE_GONE_ERROR_CODES: tuple[str, ...] = (
    "InstanceNotRunning",
    "InstanceReleased",
    "InstanceNotExists",
)
"""ErrorCodes that say the instance was stopped, released or never existed."""
TIMEOUT_ERROR_CODES: tuple[str, ...] = ("ExecutionTimeout", "DeliveryTimeout")
"""ErrorCodes of runs that timed out (while running, or before they could be delivered)."""

OSS_DELIVERY_KEYS: tuple[OssDeliveryKey, ...] = (
    OssDeliveryKey("Finished", NO_ERROR_CODE),
    *(OssDeliveryKey("Failed", code) for code in OSS_OUTPUT_ERROR_CODES),
)
"""Pre-initialised OSS deliveries: a finished one has no error code; the reference returns
``OssOutputErrorCode`` "only when OssOutputStatus is Failed", so a failed one has one."""


# --- the table -------------------------------------------------------------------------------

MetricType = Literal["gauge", "counter", "histogram"]
LabelValues = tuple[str, ...]


@dataclass(frozen=True)
class MetricSpec:
    """One metric family of the contract.

    ``name`` is the name of the family's series as queried (counters end in ``_total``;
    histograms add ``_bucket``, ``_sum`` and ``_count``). ``labels`` are the label names after
    ``account`` and ``region_id`` (which every family carries unless ``per_target`` is False).
    ``preinitialised`` lists the label values exposed at 0 for every target before anything
    happened; ``preinitialised_note`` says in words what the docs should say about them.
    """

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    per_target: bool = True
    preinitialised: tuple[LabelValues, ...] = ()
    preinitialised_note: str = ""
    buckets: tuple[float, ...] = ()
    doc: str = ""
    """More for the reference than the help text says (markdown); empty when the help is all."""
    opt_in: bool = False
    """Only exposed for targets that turned the feature on (not counted in the default series)."""
    absent_until_known: bool = False
    """Exposed once its value is known (not counted in the series before anything happened)."""

    @property
    def family(self) -> str:
        """The family name as ``prometheus_client`` takes it (counters without ``_total``)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every label name of the family's series (``le`` of histogram buckets excluded)."""
        return (*TARGET_LABELS, *self.labels) if self.per_target else self.labels

    def series_per_key(self) -> int:
        """Series one label-value set takes: 1, or buckets + ``+Inf`` + sum + count."""
        return len(self.buckets) + 3 if self.type == "histogram" else 1

    def default_series(self) -> int:
        """Series a target with default settings shows before anything happened."""
        if self.opt_in or self.absent_until_known or not self.per_target:
            return 0
        keys = len(self.preinitialised) if self.labels else 1
        return keys * self.series_per_key()


def _m(name: str) -> str:
    return PREFIX + name


def _keys(*values: str) -> tuple[LabelValues, ...]:
    return tuple((value,) for value in values)


AS_OF = "as of the last refresh"

INVOCATION_RESULTS = MetricSpec(
    _m("invocation_results"),
    "gauge",
    f"Results the API returns for the target, by InvocationStatus, {AS_OF}.",
    StatusKey._fields,
    preinitialised=_keys(*INVOCATION_STATUSES),
    preinitialised_note=f"the {len(INVOCATION_STATUSES)} documented statuses",
    doc='The target\'s "view" of the API: results kept 30 days, at most 10,000.',
)
INVOCATION_RESULTS_BY_ERROR_CODE = MetricSpec(
    _m("invocation_results_by_error_code"),
    "gauge",
    f"Results with a non-empty ErrorCode, by ErrorCode, {AS_OF}.",
    ErrorCodeKey._fields,
    preinitialised=_keys(*ERROR_CODES),
    preinitialised_note=f"the {len(ERROR_CODES)} documented codes",
)
INVOCATION_RESULTS_FINISHED = MetricSpec(
    _m("invocation_results_finished_total"),
    "counter",
    "Runs (InvokeId, InstanceId, container, run) that reached a terminal InvocationStatus since "
    "the target's first refresh (resumed across restarts from the state directory), each "
    "counted once; the backlog found by the first refresh is not "
    f'counted. error_code="{NO_ERROR_CODE}" for a run without an ErrorCode.',
    FinishedKey._fields,
    preinitialised=tuple(pair.key for pair in FINISHED_PAIRS),
    preinitialised_note=(
        f"the {len(FINISHED_PAIRS)} status x ErrorCode pairs the API produces (table below)"
    ),
)
INVOCATION_DURATION = MetricSpec(
    _m("invocation_duration_seconds"),
    "histogram",
    "FinishedTime - StartTime of the runs counted in "
    f"{_m('invocation_results_finished_total')} (runs with both times).",
    StatusKey._fields,
    unit="seconds",
    preinitialised=_keys(*STARTED_STATUSES),
    preinitialised_note="the statuses of runs that started: " + ", ".join(STARTED_STATUSES),
    buckets=DURATION_BUCKETS,
)
INVOCATION_RUNNING = MetricSpec(
    _m("invocation_running"),
    "gauge",
    f"Results with InvocationStatus Running, {AS_OF}.",
)
INVOCATION_RUNNING_OLDEST_AGE = MetricSpec(
    _m("invocation_running_oldest_age_seconds"),
    "gauge",
    f"Seconds since the StartTime of the oldest Running result (0 when none), {AS_OF}.",
    unit="seconds",
)
OSS_OUTPUT_RESULTS = MetricSpec(
    _m("oss_output_results"),
    "gauge",
    f"Results with an OSS output delivery, by OssOutputStatus, {AS_OF}.",
    OssStatusKey._fields,
    preinitialised=_keys(*OSS_OUTPUT_STATUSES),
    preinitialised_note=", ".join(OSS_OUTPUT_STATUSES),
)
OSS_OUTPUT_DELIVERIES = MetricSpec(
    _m("oss_output_deliveries_total"),
    "counter",
    "OSS output deliveries that reached Finished or Failed, each counted once "
    f'(oss_output_error_code="{NO_ERROR_CODE}" without an error code).',
    OssDeliveryKey._fields,
    preinitialised=OSS_DELIVERY_KEYS,
    preinitialised_note=(
        f"Finished/`{NO_ERROR_CODE}` and Failed with each of the "
        f"{len(OSS_OUTPUT_ERROR_CODES)} documented codes"
    ),
)
OUTPUT_DROPPED_BYTES = MetricSpec(
    _m("output_dropped_bytes_total"),
    "counter",
    "Bytes cut from the Output of counted runs (sum of Dropped).",
    unit="bytes",
    doc="`Dropped` counts what the API cut from `Output` beyond 24 KB.",
)
INVOCATION_RESULTS_WITH_DROPPED_OUTPUT = MetricSpec(
    _m("invocation_results_with_dropped_output"),
    "gauge",
    f"Results whose Output was cut (Dropped > 0), {AS_OF}.",
)
TRACKED_RUNS = MetricSpec(
    _m("tracked_runs"),
    "gauge",
    f"Entries in the exporter's tracking state for the target, {AS_OF}.",
    doc="Bounded by `tracking_cap`.",
)
RESULTS_FOUND_BY_SWEEP = MetricSpec(
    _m("results_found_by_sweep_total"),
    "counter",
    "Runs the fast path missed and the periodic full sweep found (and counted).",
    doc="They are also counted in `..._finished_total`.",
)
UP = MetricSpec(_m("up"), "gauge", "1 if the last refresh of the target succeeded.")
REFRESH_DURATION = MetricSpec(
    _m("refresh_duration_seconds"),
    "gauge",
    "Duration of the last refresh of the target.",
    unit="seconds",
)
LAST_REFRESH_SUCCESS = MetricSpec(
    _m("last_refresh_success_timestamp_seconds"),
    "gauge",
    "Unix time of the last successful refresh of the target (0 before the first).",
    unit="seconds",
)
REFRESHES = MetricSpec(_m("refreshes_total"), "counter", "Refreshes of the target attempted.")
REFRESH_FAILURES = MetricSpec(
    _m("refresh_failures_total"),
    "counter",
    "Refreshes of the target that failed, by reason.",
    ReasonKey._fields,
    preinitialised=_keys(*FAILURE_REASONS),
    preinitialised_note="every failure reason of the error classes: "
    + ", ".join(f"`{reason}`" for reason in FAILURE_REASONS),
    doc="`internal` is a bug in the exporter, logged with where it happened.",
)
REFRESH_PAGES = MetricSpec(
    _m("refresh_pages"), "gauge", "API pages (calls) fetched by the last refresh of the target."
)
RESULTS_TRUNCATED = MetricSpec(
    _m("results_truncated"),
    "gauge",
    "1 if the last full walk (first refresh or sweep) stopped at the page cap.",
)
INVALID_RECORDS = MetricSpec(
    _m("invalid_records_total"),
    "counter",
    "Distinct records skipped because they could not be parsed.",
    doc="Each is logged once, with its InvokeId and InstanceId.",
)
FIRST_WALK_COMPLETE = MetricSpec(
    _m("first_walk_complete"),
    "gauge",
    "1 once the target's first full walk is complete (runs are counted from then on), 0 while "
    "it is still reading.",
    doc="A long first walk resumes where it stopped across failed refreshes; the landing page "
    "shows how many pages and results it has read.",
)
SWEEP_INTERVAL = MetricSpec(
    _m("sweep_interval_seconds"),
    "gauge",
    "Seconds between the target's full sweeps now: the configured interval, multiplied by 4 "
    "after each sweep that found nothing in newest-first order, up to 32 times it by default "
    "(0: no sweep).",
    unit="seconds",
    doc="Back to the configured interval at once when a sweep finds a run the other steps "
    "missed or the API's order is not newest-first; above the configured interval, the fast "
    "path has been enough.",
)
API_CLOCK_OFFSET = MetricSpec(
    _m("api_clock_offset_seconds"),
    "gauge",
    "Estimated offset of the API's clock from this host's clock (API minus host), from the "
    "Date header of its answers.",
    unit="seconds",
    absent_until_known=True,
    doc="Absent until an answer carried a `Date` header. Counting decides backlog by what the "
    "exporter saw, not by clocks; only a result the first walk never saw is judged by time, "
    "against this estimate.",
)
LABEL_VALUES_FOLDED = MetricSpec(
    _m("label_values_folded"),
    "gauge",
    f'Distinct values from the API counted under "{OTHER}": longer than '
    f"{MAX_LABEL_VALUE_CHARS} characters, or beyond {MAX_UNKNOWN_VALUES} undocumented values "
    "of one label.",
    doc="Labels: `invocation_status`, `error_code`, `oss_output_status`, "
    "`oss_output_error_code`, `code`.",
)
API_REQUESTS = MetricSpec(
    _m("api_requests_total"),
    "counter",
    f'HTTP tries to the ECS API, by outcome code ("{SUCCESS_CODE}" on success, else the API Code '
    f"or http_<status>, timeout, transport, malformed), {AS_OF}.",
    CodeKey._fields,
    preinitialised=((SUCCESS_CODE,),),
    preinitialised_note=f"`{SUCCESS_CODE}`; error codes appear as they happen",
)
API_REQUEST_DURATION = MetricSpec(
    _m("api_request_duration_seconds"),
    "histogram",
    f"Duration of each HTTP try to the ECS API, {AS_OF}.",
    unit="seconds",
    buckets=API_DURATION_BUCKETS,
)
API_RATE_LIMIT_WAIT = MetricSpec(
    _m("api_rate_limit_wait_seconds_total"),
    "counter",
    f"Seconds spent waiting on the per-account/region token bucket, {AS_OF}.",
    unit="seconds",
)
COMMAND_INVOCATION_RESULTS_FINISHED = MetricSpec(
    _m("command_invocation_results_finished_total"),
    "counter",
    f"Opt-in: runs counted in {_m('invocation_results_finished_total')}, by CommandId (capped: "
    f'beyond the cap command_id="{OTHER}").',
    CommandKey._fields,
    opt_in=True,
    preinitialised_note="each admitted CommandId x the terminal statuses",
    doc="`command_breakdown.enabled`; at most `max_command_ids` ids.",
)
COMMAND_IDS_FOLDED = MetricSpec(
    _m("command_ids_folded"),
    "gauge",
    f'Opt-in: distinct CommandIds counted under command_id="{OTHER}".',
    opt_in=True,
)
TARGET_INFO = MetricSpec(
    _m("target_info"),
    "gauge",
    "How the exporter reaches the target (value 1): endpoint kind and credential source.",
    TargetInfoKey._fields,
    preinitialised_note="the target's own values",
    doc="Join on it: `* on (account, region_id) group_left (endpoint_kind) ...`. No secret.",
)
BUILD_INFO = MetricSpec(
    _m("exporter_build_info"),
    "gauge",
    "Version and VCS revision of the exporter and the Python it runs on (value 1).",
    BuildInfoKey._fields,
    per_target=False,
    doc="The one series without `account`/`region_id`.",
)
_SHARDS_DOC = (
    "The same on every shard of one deployment: shards that disagree "
    '(`count(count_values("v", ...)) > 1`) may export a target twice or not at all.'
)
EXPORTER_SHARD = MetricSpec(
    _m("exporter_shard_ordinal"),
    "gauge",
    "This exporter's shard, counted from 0 (0 when not sharded).",
    per_target=False,
)
EXPORTER_TOTAL_SHARDS = MetricSpec(
    _m("exporter_total_shards"),
    "gauge",
    "Shards the configured targets are split between (1 when not sharded).",
    per_target=False,
    doc=_SHARDS_DOC,
)
EXPORTER_OWNED_TARGETS = MetricSpec(
    _m("exporter_owned_targets"),
    "gauge",
    "Targets this exporter (shard) refreshes and exports.",
    per_target=False,
    doc="Summed over the shards, equal to `exporter_configured_targets`: each target is owned by "
    "exactly one shard.",
)
EXPORTER_CONFIGURED_TARGETS = MetricSpec(
    _m("exporter_configured_targets"),
    "gauge",
    "Targets (account x region) in the configuration, whichever shard owns them.",
    per_target=False,
    doc=_SHARDS_DOC,
)
CONFIG_LAST_RELOAD_SUCCESSFUL = MetricSpec(
    _m("exporter_config_last_reload_successful"),
    "gauge",
    "1 if the last configuration reload (SIGHUP, POST /-/reload) succeeded, 0 if it was refused.",
    per_target=False,
    doc="A refused reload keeps the running configuration; the error is logged.",
)
CONFIG_LAST_RELOAD_SUCCESS_TIME = MetricSpec(
    _m("exporter_config_last_reload_success_timestamp_seconds"),
    "gauge",
    "Unix time of the last successful configuration load (the start, or a reload).",
    unit="seconds",
    per_target=False,
)

STATE_FILES_MOVED_ASIDE = MetricSpec(
    _m("exporter_state_files_moved_aside_total"),
    "counter",
    "State files found unusable (by reason) and moved aside at start; the targets then started "
    "with a fresh baseline.",
    MovedAsideKey._fields,
    per_target=False,
    preinitialised=_keys(*STATE_MOVE_REASONS),
    preinitialised_note="every reason",
    doc="Only with `--storage.path` set (the default). See the runbook *State directory failing*.",
)

METRICS: tuple[MetricSpec, ...] = (
    INVOCATION_RESULTS,
    INVOCATION_RESULTS_BY_ERROR_CODE,
    INVOCATION_RUNNING,
    INVOCATION_RUNNING_OLDEST_AGE,
    OSS_OUTPUT_RESULTS,
    INVOCATION_RESULTS_WITH_DROPPED_OUTPUT,
    TRACKED_RUNS,
    INVOCATION_RESULTS_FINISHED,
    INVOCATION_DURATION,
    OSS_OUTPUT_DELIVERIES,
    OUTPUT_DROPPED_BYTES,
    RESULTS_FOUND_BY_SWEEP,
    UP,
    REFRESH_DURATION,
    LAST_REFRESH_SUCCESS,
    REFRESHES,
    REFRESH_FAILURES,
    REFRESH_PAGES,
    RESULTS_TRUNCATED,
    SWEEP_INTERVAL,
    INVALID_RECORDS,
    FIRST_WALK_COMPLETE,
    API_CLOCK_OFFSET,
    LABEL_VALUES_FOLDED,
    API_REQUESTS,
    API_REQUEST_DURATION,
    API_RATE_LIMIT_WAIT,
    COMMAND_INVOCATION_RESULTS_FINISHED,
    COMMAND_IDS_FOLDED,
    TARGET_INFO,
    BUILD_INFO,
    EXPORTER_SHARD,
    EXPORTER_TOTAL_SHARDS,
    EXPORTER_OWNED_TARGETS,
    EXPORTER_CONFIGURED_TARGETS,
    CONFIG_LAST_RELOAD_SUCCESSFUL,
    CONFIG_LAST_RELOAD_SUCCESS_TIME,
    STATE_FILES_MOVED_ASIDE,
)
"""Every family, in the order of the exposition."""

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}


def per_target_series() -> Iterator[tuple[MetricSpec, int]]:
    """Series per target with default settings before anything happened, family by family."""
    for spec in METRICS:
        yield spec, 1 if spec is TARGET_INFO else spec.default_series()
