// Alerting and recording rules. Every threshold, window and selector comes from _config.
local m = import '../lib/metrics.libsonnet';
local q = import '../lib/promql.libsonnet';

local PREFIX = 'CloudAssistant';
local TARGET = 'account {{ $labels.account }} in region {{ $labels.region_id }}';
// increase() extrapolates to the window's edges (2.6 for 3 events); a count reads better whole.
local COUNT = '{{ printf "%.0f" $value }}';

{
  local c = $._config,

  local dashboardUrl(uid, perTarget) =
    c.dashboardUrlBase + '/' + uid
    + (if perTarget then '?var-job={{ $labels.job }}&var-account={{ $labels.account }}&var-region_id={{ $labels.region_id }}' else ''),

  local alert(name, expr, forDuration, severity, summary, description, dashboard='cloudassistant-overview', perTarget=true, keepFiring=false) = {
    alert: PREFIX + name,
    expr: expr,
    'for': forDuration,
    labels: { severity: severity },
    annotations: {
      summary: summary,
      description: description,
      runbook_url: c.runbookUrlBase + '#' + std.asciiLower(PREFIX + name),
      dashboard_url: dashboardUrl(dashboard, perTarget),
    },
  } + (if keepFiring then { keep_firing_for: c.keepFiringFor } else {}),

  // Recording rule names carry their window, as level:metric:operation asks.
  local w = c.finishedWindow,
  local rec = {
    finished: 'account_region:%s:increase%s' % [m.prefix + 'invocation_results_finished', w],
    failed: 'account_region:%s:increase%s' % [m.prefix + 'invocation_results_failed', w],
    ratio: 'account_region:%s:ratio%s' % [m.prefix + 'invocation_results_failure', w],
    byCode: 'account_region_error_code:%s:increase%s' % [m.prefix + 'invocation_results_finished', w],
    cmdFinished: 'account_region_command:%s:increase%s' % [m.prefix + 'command_invocation_results_finished', w],
    cmdFailed: 'account_region_command:%s:increase%s' % [m.prefix + 'command_invocation_results_failed', w],
  },
  local transitional = m.invocation_results + q.sel(c, 'invocation_status=~"Pending|Stopping"'),
  local failing = 'invocation_status=~"%s"' % q.regex(c.failureStatuses),
  local finishedIncrease(matchers='') =
    'increase(%s%s[%s])' % [m.invocation_results_finished_total, q.sel(c, matchers), w],

  // The last refresh failed on every replica and refreshes failed for one of these reasons.
  local refreshFailureExpr(reasons) =
    'max without (%s) (\n  increase(%s%s[%s])\n) > 0\nand ignoring (reason)\nmax without (%s) (%s) == 0' % [
      q.replicas(c),
      m.refresh_failures_total,
      q.sel(c, 'reason=~"%s"' % reasons),
      c.refreshFailureWindow,
      q.replicas(c),
      q.last(c, m.up + q.sel(c)),
    ],
  local refreshFailure =
    'Job {{ $labels.job }} cannot refresh ' + TARGET + ': ' + COUNT
    + ' refreshes failed with reason {{ $labels.reason }} in the last ' + c.refreshFailureWindow
    + ' and the last one failed too.',

  local errorCodeAlert(name, codes, minimum, severity, summary, what, keepFiring=true) = alert(
    name,
    '%s{error_code=~"%s"} >= %d' % [rec.byCode, q.regex(codes), minimum],
    c.errorCodeFor,
    severity,
    summary + ' in ' + TARGET + '.',
    COUNT + ' runs in ' + TARGET + ' finished with ErrorCode {{ $labels.error_code }} in the last '
    + w + ': ' + what,
    keepFiring=keepFiring,
  ),

  prometheusAlerts+:: {
    groups+: [
      {
        name: 'cloudassistant.exporter',
        rules: [
          alert(
            'ExporterAbsent',
            'absent(up{%s})' % c.absentSelector,
            c.absentFor,
            'warning',
            'No Cloud Assistant exporter is scraped at all.',
            'Prometheus has no target matching {%s} for %s (absent = {{ $value }}): the exporter was removed from service discovery, so no account or region is monitored.' % [c.absentSelector, c.absentFor],
            dashboard='cloudassistant-exporter',
            perTarget=false,
          ),
          alert(
            'ExporterDown',
            'up{%s} == 0' % c.exporterSelector,
            c.exporterDownFor,
            'warning',
            'Prometheus cannot scrape the Cloud Assistant exporter {{ $labels.instance }}.',
            'The scrape of {{ $labels.instance }} (job {{ $labels.job }}) has failed for '
            + c.exporterDownFor + ' (up = {{ $value }}): the accounts and regions it serves are not monitored by it.',
            dashboard='cloudassistant-exporter',
            perTarget=false,
          ),
          alert(
            'ExporterShardMissing',
            // Distinct ordinals, so two replicas of one shard (an HA pair of shards) count once.
            'max by (%(keep)s) (%(total)s%(sel)s)\n-\ncount by (%(keep)s) (\n  count_values by (%(keep)s) ("shard", %(ordinal)s%(sel)s)\n)\n> 0' % {
              keep: std.join(', ', c.keepLabels),
              total: m.exporter_total_shards,
              ordinal: m.exporter_shard_ordinal,
              sel: q.sel(c),
            },
            c.shardMissingFor,
            'warning',
            'A shard of the Cloud Assistant exporter job {{ $labels.job }} exports nothing.',
            'Job {{ $labels.job }} is missing {{ $value }} of its --total-shards shards: they have reported no metrics for '
            + c.shardMissingFor + '; the accounts and regions those shards own are not monitored, and no alert about them can fire. A shard pod that is Pending, deleted or gone from service discovery does this; a shard that is scraped but failing raises CloudAssistantExporterDown instead.',
            dashboard='cloudassistant-exporter',
            perTarget=false,
          ),
          alert(
            'TargetCredentialsFailing',
            refreshFailureExpr('auth|permission|credentials'),
            c.credentialsFailingFor,
            'warning',
            'Cloud Assistant exporter is refused by the API (reason {{ $labels.reason }}) for ' + TARGET + '.',
            refreshFailure,
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'TargetThrottled',
            refreshFailureExpr('throttled'),
            c.throttledFailingFor,
            'warning',
            'Cloud Assistant API throttling stops the refresh of ' + TARGET + '.',
            refreshFailure,
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'ApiUnavailable',
            refreshFailureExpr('server|transport'),
            c.apiUnavailableFor,
            'warning',
            'The ECS API is unreachable or failing (reason {{ $labels.reason }}) for ' + TARGET + '.',
            refreshFailure,
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'TargetRefreshFailing',
            refreshFailureExpr('invalid_request|malformed|internal|clock_skew'),
            c.refreshFailingFor,
            'warning',
            'The exporter cannot use the API\'s answers (reason {{ $labels.reason }}) for ' + TARGET + '.',
            refreshFailure,
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'TargetStale',
            'time() - max without (%s) (%s) > %d\nunless\nmax without (%s) (%s) == 0' % [
              q.replicas(c), q.last(c, m.last_refresh_success_timestamp_seconds + q.sel(c)), c.refreshStaleSeconds,
              q.replicas(c), q.last(c, m.up + q.sel(c)),
            ],
            c.refreshStaleFor,
            'warning',
            'Cloud Assistant data of ' + TARGET + ' is stale.',
            'The last successful refresh of ' + TARGET + ' by job {{ $labels.job }} was {{ $value | humanizeDuration }} ago, although no refresh failed: a refresh is hanging.',
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'ApiThrottling',
            'sum by (%s) (\n  rate(%s%s[%s])\n)\n/\nsum by (%s) (rate(%s%s[%s]))\n> %s' % [
              q.target(c), m.api_requests_total, q.sel(c, 'code=~"(?i)throttling.*|http_429"'), c.apiThrottlingWindow,
              q.target(c), m.api_requests_total, q.sel(c), c.apiThrottlingWindow, c.apiThrottlingRatio,
            ],
            c.apiThrottlingFor,
            'warning',
            'Cloud Assistant API requests for ' + TARGET + ' are being throttled.',
            '{{ $value | humanizePercentage }} of the API requests for ' + TARGET + ' were throttled over the last '
            + c.apiThrottlingWindow + '. Refreshes are slowed down by retries and may start to fail.',
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'RateLimiterSaturated',
            'max without (%s) (\n  rate(%s%s[%s])\n) > %s' % [
              q.replicas(c), m.api_rate_limit_wait_seconds_total, q.sel(c), c.rateLimitWindow, c.rateLimitWaitRatio,
            ],
            c.rateLimitFor,
            'warning',
            "The exporter's rate limiter holds back the refresh of " + TARGET + '.',
            'Requests for ' + TARGET + ' waited {{ $value | humanizePercentage }} of the time on the exporter\'s own token bucket over the last '
            + c.rateLimitWindow + ': refreshes run late; raise the limit or share it less.',
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'ResultsTruncated',
            'max without (%s) (%s) > 0' % [q.replicas(c), q.last(c, m.results_truncated + q.sel(c))],
            c.resultsTruncatedFor,
            'warning',
            'Cloud Assistant results of ' + TARGET + ' are truncated by the page cap.',
            "The exporter's full walk of " + TARGET + ' stopped at its page cap (results_truncated = {{ $value }}) for '
            + c.resultsTruncatedFor + ': older runs are missing from the metrics.',
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'SweepFindsMissedRuns',
            'max without (%s) (\n  increase(%s%s[%s])\n) >= %d' % [
              q.replicas(c), m.results_found_by_sweep_total, q.sel(c), c.sweepWindow, c.sweepFoundMin,
            ],
            c.sweepFoundFor,
            'info',
            'The fast path misses Cloud Assistant runs of ' + TARGET + '.',
            'The periodic full sweep found ' + COUNT + ' runs of ' + TARGET + ' in the last ' + c.sweepWindow
            + ' that the fast path had missed: their counts arrive one sweep late.',
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'InvalidRecords',
            'max without (%s) (\n  increase(%s%s[%s])\n) > 0' % [
              q.replicas(c), m.invalid_records_total, q.sel(c), c.invalidRecordsWindow,
            ],
            c.invalidRecordsFor,
            'warning',
            'The ECS API returns records the exporter cannot read for ' + TARGET + '.',
            COUNT + ' records of ' + TARGET + ' were skipped as unreadable in the last ' + c.invalidRecordsWindow
            + ': the API schema may have changed; those runs are not counted.',
            dashboard='cloudassistant-exporter',
            keepFiring=true,
          ),
          alert(
            'LabelValuesFolded',
            'max without (%s) (%s) > 0' % [q.replicas(c), q.last(c, m.label_values_folded + q.sel(c))],
            c.labelValuesFoldedFor,
            'info',
            'Unknown or oversized API values of ' + TARGET + ' are counted as "' + m.other + '".',
            '{{ $value }} distinct values the API returned for ' + TARGET + ' (statuses, error codes, API codes) were undocumented beyond the cap or too long, and are counted under "'
            + m.other + '": the API may have new values; the exporter log names them.',
            dashboard='cloudassistant-exporter',
          ),
          alert(
            'CommandIdsFolded',
            'max without (%s) (%s) > 0' % [q.replicas(c), q.last(c, m.command_ids_folded + q.sel(c))],
            c.commandIdsFoldedFor,
            'info',
            'Per-command counters of ' + TARGET + ' hit their cap.',
            '{{ $value }} CommandIds of ' + TARGET + ' are counted under command_id="other": raise command_breakdown.max_command_ids or accept the fold.',
            dashboard='cloudassistant-exporter',
          ),
          // The next two are about one exporter process each, so they keep `instance`: every
          // replica reports its own reload and its own state directory.
          alert(
            'ExporterConfigReloadFailed',
            '%s == 0' % [q.last(c, m.exporter_config_last_reload_successful + q.sel(c))],
            c.configReloadFailedFor,
            'warning',
            'The Cloud Assistant exporter {{ $labels.instance }} refused its new configuration.',
            'The last configuration reload of {{ $labels.instance }} (job {{ $labels.job }}) failed and no later one succeeded for '
            + c.configReloadFailedFor + ' (last_reload_successful = {{ $value }}): it keeps running the previous configuration; its log names the error.',
            dashboard='cloudassistant-exporter',
            perTarget=false,
          ),
          alert(
            'ExporterStateReset',
            // The counter only moves at start, so a fresh series (a new pod, a first start)
            // carries its whole value in its first sample, which increase() cannot see: above 0,
            // it fires while the process is younger than the window. The process's own start time
            // decides, not the age of the series in this Prometheus, so both servers of an HA pair
            // agree (a new one with an empty TSDB included) and a restart that moves a file aside
            // again under the same labels (1 then 1) is seen. The age of the series decides only
            // when the process metrics are off (--web.disable-exporter-metrics).
            'increase(%(x)s[%(w)s]) > 0\nor\n(\n  %(x)s > 0\n  and on (%(on)s)\n  time() - %(start)s < %(ws)d\n)\nor\n(\n  %(x)s > 0\n  unless\n  %(x)s offset %(w)s\n  unless on (%(on)s)\n  %(start)s\n)' % {
              x: m.exporter_state_files_moved_aside_total + q.sel(c),
              w: c.stateResetWindow,
              ws: q.seconds(c.stateResetWindow),
              on: std.join(', ', c.keepLabels + ['instance']),
              start: 'process_start_time_seconds' + q.sel(c),
            },
            c.stateResetFor,
            'info',
            'The Cloud Assistant exporter {{ $labels.instance }} found its state unusable and started afresh.',
            COUNT + ' state files of {{ $labels.instance }} (job {{ $labels.job }}) were unusable ({{ $labels.reason }}) and moved aside at start within the last '
            + c.stateResetWindow + ': the counters of its targets restarted from a fresh baseline, and runs that finished while it was down are not counted.',
            dashboard='cloudassistant-exporter',
            perTarget=false,
          ),
          alert(
            'HostClockSkewed',
            // Each replica runs on its own host clock: per instance, the worst target.
            'max without (account, region_id) (\n  abs(%s)\n) > %d' % [q.last(c, m.api_clock_offset_seconds + q.sel(c)), c.clockOffsetSeconds],
            c.clockSkewFor,
            'warning',
            'The clock of the Cloud Assistant exporter {{ $labels.instance }} is far from the ECS API\'s.',
            "The clock of the host running {{ $labels.instance }} (job {{ $labels.job }}) is {{ $value | humanizeDuration }} away from the ECS API's (more than "
            + c.clockOffsetSeconds + 's): the API refuses requests signed more than 15 minutes off (refresh failures with reason clock_skew); fix NTP on that host.',
            dashboard='cloudassistant-exporter',
            perTarget=false,
          ),
          alert(
            'FirstWalkIncomplete',
            'max without (%s) (%s) == 0' % [q.replicas(c), q.last(c, m.first_walk_complete + q.sel(c))],
            c.firstWalkIncompleteFor,
            'warning',
            'The exporter has not finished reading ' + TARGET + ' for the first time.',
            'No replica of job {{ $labels.job }} has completed the first full walk of ' + TARGET + ' in '
            + c.firstWalkIncompleteFor + ' (first_walk_complete = {{ $value }}): no run of it is counted until then. Usually sustained throttling or a very large account.',
            dashboard='cloudassistant-exporter',
          ),
        ],
      },
      {
        name: 'cloudassistant.invocations',
        // The recording rules come first: rules of one group run in order, so the alerts read the
        // values of the same evaluation.
        rules: [
          { record: rec.finished, expr: q.replicaSafeSum(c, finishedIncrease()) },
          { record: rec.failed, expr: q.replicaSafeSum(c, finishedIncrease(failing)) },
          { record: rec.ratio, expr: '%s\n/\n%s' % [rec.failed, rec.finished] },
          { record: rec.byCode, expr: q.replicaSafeSum(c, finishedIncrease('error_code!="%s"' % m.noErrorCode), ['error_code']) },
          {
            record: rec.cmdFinished,
            expr: q.replicaSafeSum(c, 'increase(%s%s[%s])' % [m.command_invocation_results_finished_total, q.sel(c), w], ['command_id', 'command_name']),
          },
          {
            record: rec.cmdFailed,
            expr: q.replicaSafeSum(c, 'increase(%s%s[%s])' % [m.command_invocation_results_finished_total, q.sel(c, failing), w], ['command_id', 'command_name']),
          },
          alert(
            'FleetInvocationsFailing',
            'sum by (%s) (%s)\n/\nsum by (%s) (%s)\n> %s\nand on (%s)\nsum by (%s) (%s) >= %d' % [
              std.join(', ', c.keepLabels), rec.failed,
              std.join(', ', c.keepLabels), rec.finished,
              c.fleetFailureRatio,
              std.join(', ', c.keepLabels),
              std.join(', ', c.keepLabels), rec.finished, c.fleetFailureMinFinished,
            ],
            c.fleetFailureFor,
            'critical',
            'Cloud Assistant runs fail across the whole fleet of job {{ $labels.job }}.',
            '{{ $value | humanizePercentage }} of all runs that finished in every account and region of job {{ $labels.job }} over the last '
            + w + ' ended as ' + std.join(', ', c.failureStatuses) + ': this is not one broken target.',
            perTarget=false,
          ),
          alert(
            'InvocationFailureRatioHigh',
            '%s > %s\nand on (%s)\n%s >= %d' % [rec.ratio, c.failureRatio, q.target(c), rec.finished, c.failureMinFinished],
            c.failureRatioFor,
            'warning',
            'Many Cloud Assistant runs fail in ' + TARGET + '.',
            '{{ $value | humanizePercentage }} of the runs that finished in ' + TARGET + ' over the last ' + w
            + ' ended as ' + std.join(', ', c.failureStatuses) + '.',
          ),
          alert(
            'CommandFailureRatioHigh',
            '%s\n/\n%s\n> %s\nand on (%s)\n%s >= %d' % [
              rec.cmdFailed, rec.cmdFinished, c.commandFailureRatio,
              q.target(c, ['command_id', 'command_name']), rec.cmdFinished, c.commandFailureMinFinished,
            ],
            c.commandFailureFor,
            'warning',
            'Cloud Assistant command {{ $labels.command_name }} fails in ' + TARGET + '.',
            '{{ $value | humanizePercentage }} of the runs of command {{ $labels.command_id }} ({{ $labels.command_name }}) in '
            + TARGET + ' over the last ' + w + ' ended as ' + std.join(', ', c.failureStatuses) + '.',
          ),
          errorCodeAlert('ExecutionTimeouts', ['ExecutionTimeout'], c.executionTimeoutMin, 'warning',
                         'Cloud Assistant commands time out', 'commands ran longer than their Timeout and were stopped.'),
          errorCodeAlert('DeliveryTimeouts', ['DeliveryTimeout'], c.deliveryTimeoutMin, 'warning',
                         'Cloud Assistant commands cannot be delivered', "the commands never reached the instances' agents."),
          errorCodeAlert('AgentUnavailable', m.agentErrorCodes, c.agentUnavailableMin, 'warning',
                         'The Cloud Assistant agent is unavailable on instances',
                         'the agent on those instances is stopped, hung, upgrading or too old.'),
          errorCodeAlert('SecurityGroupDenied', ['SecurityGroupRuleDenied'], c.securityGroupDeniedMin, 'warning',
                         'Security groups block Cloud Assistant',
                         'security group rules deny the instances access to the Cloud Assistant service.'),
          errorCodeAlert('InstancesGone', m.instanceGoneErrorCodes, c.instanceGoneMin, 'info',
                         'Cloud Assistant commands target stopped or released instances',
                         'the instances were stopped, released or never existed when the command ran.',
                         keepFiring=false),
          alert(
            'InvocationStuckRunning',
            'max without (%s) (%s) > %d' % [q.replicas(c), q.last(c, m.invocation_running_oldest_age_seconds + q.sel(c)), c.stuckRunningSeconds],
            c.stuckRunningFor,
            'warning',
            'A Cloud Assistant run has been Running for too long in ' + TARGET + '.',
            'The oldest run still Running in ' + TARGET + ' started {{ $value | humanizeDuration }} ago, longer than the '
            + c.stuckRunningSeconds + 's any command should take.',
          ),
          alert(
            'InvocationStuckInTransition',
            // The max over replicas comes first, inside the subquery: a pod rescheduled under a
            // new instance and pod continues the same series, and a series that went stale (a
            // removed target, the old pod) is no longer read, so it leaves no ghost for the
            // window. The `offset` term keeps a fresh start (a few minutes of samples) from
            // counting as the window; the last term ends the alert once the target is gone. Both
            // bridge gaps up to scrapeGapTolerance (a failed scrape, the pod being replaced).
            'min_over_time(\n  max without (%(r)s) (%(t)s)[%(w)s:]\n) > 0\nand\nmax without (%(r)s) (%(before)s)\nand\nmax without (%(r)s) (%(now)s)' % {
              r: q.replicas(c),
              t: transitional,
              w: c.stuckTransitionWindow,
              before: q.last(c, transitional, offset=c.stuckTransitionWindow),
              now: q.last(c, transitional),
            },
            c.stuckTransitionFor,
            'warning',
            'Cloud Assistant runs stay {{ $labels.invocation_status }} in ' + TARGET + '.',
            'At least {{ $value }} results of ' + TARGET + ' have been {{ $labels.invocation_status }} without a break for '
            + c.stuckTransitionWindow + ': runs are stuck before starting or while stopping.',
          ),
          alert(
            'OssOutputDeliveryFailing',
            '%s\n>= %d' % [
              q.replicaSafeSum(c, 'increase(%s%s[%s])' % [m.oss_output_deliveries_total, q.sel(c, 'oss_output_status="Failed"'), c.ossFailureWindow], ['oss_output_error_code']),
              c.ossFailureMin,
            ],
            c.ossFailureFor,
            'warning',
            'Command output cannot be delivered to OSS in ' + TARGET + '.',
            COUNT + ' deliveries of command output to OSS failed in ' + TARGET + ' over the last ' + c.ossFailureWindow
            + ' with OssOutputErrorCode {{ $labels.oss_output_error_code }}.',
            keepFiring=true,
          ),
          alert(
            'OutputDropped',
            '%s\n>= %d' % [
              q.replicaSafeSum(c, 'changes(%s%s[%s]) - resets(%s%s[%s])' % [
                m.output_dropped_bytes_total, q.sel(c), c.droppedWindow, m.output_dropped_bytes_total, q.sel(c), c.droppedWindow,
              ]),
              c.droppedMinIncrements,
            ],
            c.droppedFor,
            'info',
            'Command output is repeatedly truncated in ' + TARGET + '.',
            'Runs with output cut at 24 KB (Dropped > 0) appeared at {{ $value }} separate refreshes of ' + TARGET
            + ' over the last ' + c.droppedWindow + ': those commands print more than the API keeps.',
            keepFiring=true,
          ),
        ],
      },
    ],
  },
}
