// The two dashboards. Every query filters by $job and $instance (and $cluster in multi-cluster
// mode), every count is taken once per target however many exporter replicas report it, and
// every stat turns colour at the threshold of the alert that watches the same value.
local m = import '../lib/metrics.libsonnet';
local g = import 'grafana.libsonnet';

{
  local c = $._config,
  local cluster = if c.showMultiCluster then '%s=~"$cluster", ' % c.clusterLabel else '',
  local JOB = cluster + 'job=~"$job", instance=~"$instance"',
  local SEL = JOB + ', account=~"$account", region_id=~"$region_id"',
  local sel(extra='') = '{' + SEL + (if extra == '' then '' else ', ' + extra) + '}',
  // The max over replicas of an HA pair first, so a count is never doubled.
  local rs(inner) = 'max without (%s) (%s)' % [std.join(', ', c.replicaLabels), inner],
  local perTarget = 'sum by (account, region_id)',
  local byTarget = '{{account}} {{region_id}}',
  local failing = 'invocation_status=~"%s"' % std.join('|', c.failureStatuses),
  local finished(matchers='', window='$__rate_interval', fn='rate') =
    rs('%s(%s%s[%s])' % [fn, m.invocation_results_finished_total, sel(matchers), window]),
  local rate(metric, matchers='') = 'rate(%s%s[$__rate_interval])' % [metric, sel(matchers)],
  local T = g.target,

  local variables(withTargets) =
    [g.datasourceVariable()]
    + (if c.showMultiCluster then [
         g.queryVariable('cluster', 'Cluster', 'label_values(%s{%s}, %s)' % [m.exporter_build_info, c.exporterSelector, c.clusterLabel]),
       ] else [])
    + [
      g.queryVariable('job', 'Job', 'label_values(%s{%s%s}, job)' % [m.exporter_build_info, cluster, c.exporterSelector]),
      g.queryVariable('instance', 'Instance', 'label_values(%s{%sjob=~"$job"}, instance)' % [m.exporter_build_info, cluster]),
    ]
    + (if withTargets then [
         g.queryVariable('account', 'Account', 'label_values(%s{%s}, account)' % [m.up, JOB]),
         g.queryVariable('region_id', 'Region', 'label_values(%s{%s, account=~"$account"}, region_id)' % [m.up, JOB]),
       ] else []),

  local successRange = 'sum(%s)' % finished('invocation_status="Success"', '$__range', 'increase'),
  local failedRange = 'sum(%s)' % finished(failing, '$__range', 'increase'),
  local finishedRange = 'sum(%s)' % finished('', '$__range', 'increase'),
  local tableQuery(expr) = T(expr, instant=true, table=true),

  local overview = g.dashboard(
    c,
    'cloudassistant-overview',
    'Alibaba Cloud Assistant / Overview',
    'What ECS Cloud Assistant command runs are doing, per account and region.',
    variables(true),
    [
      g.row('Summary'),
      g.stat('Success ratio', 'Share of the runs that finished in the selected time range with InvocationStatus Success, over the selected accounts and regions. Success ratio + failed share + other endings (cancelled, stopped, terminated) = 100%.',
             '%s\n/\n%s' % [successRange, finishedRange], 'percentunit', 5,
             g.steps('red', [[1 - c.failureRatio, 'green']])),
      g.stat('Failed share', 'Share of the same runs that ended as %s: red at the ratio CloudAssistantInvocationFailureRatioHigh fires at.' % std.join(', ', c.failureStatuses),
             '%s\n/\n%s' % [failedRange, finishedRange], 'percentunit', 5,
             g.steps('green', [[c.failureRatio, 'red']])),
      g.stat('Runs finished', 'Runs (one per instance, container and repetition) that reached a terminal status in the selected time range.',
             finishedRange, 'short', 5),
      g.stat('Running now', 'Results currently in InvocationStatus Running.',
             'sum(%s)' % rs('%s%s' % [m.invocation_running, sel()]), 'short', 5),
      g.stat('Oldest running run', 'How long the oldest run still Running has been running (0 when none): red where CloudAssistantInvocationStuckRunning fires.',
             'max(%s%s)' % [m.invocation_running_oldest_age_seconds, sel()], 's', 4,
             g.steps('green', [[c.stuckRunningSeconds, 'red']])),
      g.row('Finished runs'),
      g.timeseries('Outcome shares by account and region', 'Per account and region, the share of finished runs that ended in Success and the share that failed (%s); the same denominator, so the rest is cancelled or stopped runs. Gaps: no run finished.' % std.join(', ', c.failureStatuses),
                   [
                     T('%s (%s)\n/\n%s (%s)' % [perTarget, finished('invocation_status="Success"'), perTarget, finished()], '{{account}} {{region_id}} success'),
                     T('%s (%s)\n/\n%s (%s)' % [perTarget, finished(failing), perTarget, finished()], '{{account}} {{region_id}} failed'),
                   ],
                   'percentunit', 12, g.steps('green', [[c.failureRatio, 'red']])),
      g.timeseries('Finished runs by status', 'Runs per second reaching each terminal InvocationStatus (Success, Failed, Error, Timeout, Cancelled, Terminated, Aborted, Invalid, Stopped).',
                   [T('sum by (invocation_status) (%s)' % finished(), '{{invocation_status}}')], 'ops'),
      g.timeseries('Finished runs by ErrorCode', 'Runs per second that finished with an ErrorCode, by code (ExitCodeNonzero, ExecutionTimeout, ClientNotRunning, InstanceReleased, ...).',
                   [T('sum by (error_code) (%s)' % finished('error_code!="%s"' % m.noErrorCode), '{{error_code}}')], 'ops'),
      g.panel('bargauge', 'Top failing error codes', 'The ten ErrorCodes that ended the most runs in the selected time range.',
              [T('topk(10, sum by (error_code) (%s))' % finished('error_code!="%s"' % m.noErrorCode, '$__range', 'increase'), '{{error_code}}', instant=true)],
              'short', 12, 8, g.steps('green')),
      g.timeseries('Timeouts', 'Runs per second that timed out, per account and region: ExecutionTimeout (ran longer than its Timeout) and DeliveryTimeout (never reached the agent).',
                   [T('sum by (account, region_id, error_code) (%s)' % finished('error_code=~"%s"' % std.join('|', m.timeoutErrorCodes)), '{{account}} {{region_id}} {{error_code}}')], 'ops'),
      g.timeseries('Run duration percentiles', '50th, 90th and 99th percentile of FinishedTime - StartTime of the finished runs, from the duration histogram (bucket resolution).',
                   [
                     T('histogram_quantile(%s, sum by (le) (%s))' % [q, rs(rate(m.invocation_duration_seconds_bucket))], 'p%d' % std.round(q * 100))
                     for q in [0.5, 0.9, 0.99]
                   ], 's', 24),
      g.row('Runs in view'),
      g.timeseries('Results by status', 'Results the exporter currently sees, by InvocationStatus (all 13 statuses).',
                   [T('sum by (invocation_status) (%s)' % rs('%s%s' % [m.invocation_results, sel()]), '{{invocation_status}}')]),
      g.timeseries('Running runs', 'Results in InvocationStatus Running, per account and region.',
                   [T('%s (%s)' % [perTarget, rs('%s%s' % [m.invocation_running, sel()])], byTarget)]),
      g.timeseries('Oldest running run by account and region', 'Age of the oldest run still Running; a line that keeps growing is a stuck run (dashed: where CloudAssistantInvocationStuckRunning fires).',
                   [T('max by (account, region_id) (%s%s)' % [m.invocation_running_oldest_age_seconds, sel()], byTarget)],
                   's', 12, g.steps('green', [[c.stuckRunningSeconds, 'red']])),
      g.timeseries('Results by ErrorCode', 'Results the exporter currently sees with an ErrorCode, by code.',
                   [T('sum by (error_code) (%s)' % rs('%s%s' % [m.invocation_results_by_error_code, sel()]), '{{error_code}}')]),
      g.row('Output'),
      g.timeseries('OSS deliveries', 'Deliveries of command output to OSS that finished, per second, by OssOutputStatus (Finished or Failed).',
                   [T('sum by (oss_output_status) (%s)' % rs(rate(m.oss_output_deliveries_total)), '{{oss_output_status}}')], 'ops'),
      g.timeseries('OSS delivery failures by error code', 'Failed deliveries to OSS per second, by OssOutputErrorCode (OSS.AccessDenied, OSS.NoSuchBucket, ...; none when the API gives no code).',
                   [T('sum by (account, region_id, oss_output_error_code) (%s)' % rs(rate(m.oss_output_deliveries_total, 'oss_output_status="Failed"')), '{{account}} {{region_id}} {{oss_output_error_code}}')], 'ops'),
      g.timeseries('OSS output results in view', 'Results the exporter currently sees, by OssOutputStatus (InProgress, Finished, Failed).',
                   [T('sum by (oss_output_status) (%s)' % rs('%s%s' % [m.oss_output_results, sel()]), '{{oss_output_status}}')]),
      g.timeseries('Dropped output', 'Bytes of command output cut by the API (the Dropped field, beyond 24 KB) per second, per account and region.',
                   [T('%s (%s)' % [perTarget, rs(rate(m.output_dropped_bytes_total))], byTarget)], 'Bps'),
      g.timeseries('Results with dropped output', 'Results the exporter currently sees whose Output was cut (Dropped > 0).',
                   [T('%s (%s)' % [perTarget, rs('%s%s' % [m.invocation_results_with_dropped_output, sel()])], byTarget)], 'short', 24),
      g.row('Per command (opt-in: command_breakdown.enabled)'),
      g.timeseries('Finished runs by command', 'Runs per second that finished, by CommandId and name (only with command_breakdown enabled; ids beyond the cap count as "other").',
                   [T('sum by (command_id, command_name) (%s)' % rs(rate(m.command_invocation_results_finished_total)), '{{command_name}} ({{command_id}})')], 'ops'),
      g.timeseries('Failed share by command', 'Share of each command\'s finished runs that failed (dashed: where CloudAssistantCommandFailureRatioHigh fires).',
                   [T('sum by (command_id, command_name) (%s)\n/\nsum by (command_id, command_name) (%s)' % [
                      rs(rate(m.command_invocation_results_finished_total, failing)), rs(rate(m.command_invocation_results_finished_total)),
                    ], '{{command_name}} ({{command_id}})')],
                   'percentunit', 12, g.steps('green', [[c.commandFailureRatio, 'red']])),
      g.row('Per account and region'),
      g.panel(
        'table',
        'Accounts and regions',
        "One line per account and region: the exporter's last refresh, runs finished and failed in the selected time range, the success ratio, runs Running now and the age of the oldest one.",
        [
          tableQuery('min by (account, region_id) (%s%s)' % [m.up, sel()]),
          tableQuery('%s (%s)' % [perTarget, finished('', '$__range', 'increase')]),
          tableQuery('%s (%s)' % [perTarget, finished(failing, '$__range', 'increase')]),
          tableQuery('%s (%s)\n/\n%s (%s)' % [perTarget, finished('invocation_status="Success"', '$__range', 'increase'), perTarget, finished('', '$__range', 'increase')]),
          tableQuery('%s (%s)' % [perTarget, rs('%s%s' % [m.invocation_running, sel()])]),
          tableQuery('max by (account, region_id) (%s%s)' % [m.invocation_running_oldest_age_seconds, sel()]),
        ],
        'short', 24, 9,
        extra={
          transformations: [
            { id: 'merge', options: {} },
            {
              id: 'organize',
              options: {
                excludeByName: { Time: true },
                renameByName: {
                  account: 'Account',
                  region_id: 'Region',
                  'Value #A': 'Last refresh',
                  'Value #B': 'Finished',
                  'Value #C': 'Failed',
                  'Value #D': 'Success ratio',
                  'Value #E': 'Running',
                  'Value #F': 'Oldest running',
                },
              },
            },
          ],
          fieldConfig+: {
            overrides: [
              {
                matcher: { id: 'byName', options: 'Last refresh' },
                properties: [
                  { id: 'mappings', value: [{ type: 'value', options: { '0': { text: 'failing', color: 'red', index: 0 }, '1': { text: 'OK', color: 'green', index: 1 } } }] },
                  { id: 'custom.cellOptions', value: { type: 'color-text' } },
                ],
              },
              {
                matcher: { id: 'byName', options: 'Success ratio' },
                properties: [
                  { id: 'unit', value: 'percentunit' },
                  { id: 'thresholds', value: { mode: 'absolute', steps: g.steps('red', [[1 - c.failureRatio, 'green']]) } },
                  { id: 'custom.cellOptions', value: { type: 'color-text' } },
                ],
              },
              {
                matcher: { id: 'byName', options: 'Oldest running' },
                properties: [
                  { id: 'unit', value: 's' },
                  { id: 'thresholds', value: { mode: 'absolute', steps: g.steps('green', [[c.stuckRunningSeconds, 'red']]) } },
                  { id: 'custom.cellOptions', value: { type: 'color-text' } },
                ],
              },
            ],
          },
        },
      ),
    ],
  ),

  local apiCalls = rs(rate(m.api_requests_total)),
  local exporter = g.dashboard(
    c,
    'cloudassistant-exporter',
    'Alibaba Cloud Assistant / Exporter',
    'Health of aliyun-cloudassistant-exporter: refreshes, ECS API calls and their cost, paging, tracking, the process.',
    variables(true),
    [
      g.row('Scrapes and refreshes'),
      g.timeseries('Exporter scrape up', "Prometheus' own up series for the exporter's scrape job: 0 means Prometheus could not scrape that exporter at all.",
                   [T('up{%s}' % JOB, '{{instance}}')], 'short', 12, g.steps('red', [[1, 'green']])),
      g.timeseries('Target refresh up', 'aliyun_cloudassistant_up per account and region: 1 if the last refresh of that target succeeded (the best replica).',
                   [T('max by (account, region_id) (%s%s)' % [m.up, sel()], byTarget)], 'short', 12, g.steps('red', [[1, 'green']])),
      g.timeseries('Refresh duration', 'How long the last refresh of each target took, API calls and retries included.',
                   [T('max by (account, region_id) (%s%s)' % [m.refresh_duration_seconds, sel()], byTarget)], 's'),
      g.timeseries('Time since last successful refresh', 'Seconds since each target was last refreshed successfully (dashed: where CloudAssistantTargetStale fires).',
                   [T('time() - max by (account, region_id) (%s%s)' % [m.last_refresh_success_timestamp_seconds, sel()], byTarget)],
                   's', 12, g.steps('green', [[c.refreshStaleSeconds, 'red']])),
      g.timeseries('Refreshes', 'Refreshes attempted per second, per account and region and exporter instance.',
                   [T('sum by (instance, account, region_id) (%s)' % rate(m.refreshes_total), '{{instance}} {{account}} {{region_id}}')], 'ops'),
      g.timeseries('Refresh failures by reason', 'Failed refreshes per second by reason: throttled, server, auth, permission, invalid_request, malformed, transport, credentials, clock_skew, internal.',
                   [T('sum by (instance, account, region_id, reason) (%s)' % rate(m.refresh_failures_total), '{{instance}} {{account}} {{region_id}} {{reason}}')], 'ops'),
      g.row('ECS API'),
      g.timeseries('API requests by code', 'HTTP tries to the ECS API per second, by outcome: ok, else the API error Code or http_<status>, timeout, transport, malformed.',
                   [T('sum by (code) (%s)' % rate(m.api_requests_total), '{{code}}')], 'reqps'),
      g.timeseries('API throttling ratio', 'Share of API tries answered with a Throttling code or HTTP 429, per account and region (dashed: where CloudAssistantApiThrottling fires).',
                   [T('%s (%s)\n/\n%s (%s)' % [perTarget, rate(m.api_requests_total, 'code=~"(?i)throttling.*|http_429"'), perTarget, rate(m.api_requests_total)], byTarget)],
                   'percentunit', 12, g.steps('green', [[c.apiThrottlingRatio, 'red']])),
      g.timeseries('API request duration percentiles', '50th, 90th and 99th percentile of the duration of one HTTP try to the ECS API.',
                   [
                     T('histogram_quantile(%s, sum by (le) (%s))' % [q, rate(m.api_request_duration_seconds_bucket)], 'p%d' % std.round(q * 100))
                     for q in [0.5, 0.9, 0.99]
                   ], 's'),
      g.timeseries('Rate-limit wait', "Share of the time requests waited on the exporter's own token bucket, per exporter instance and target (100% = always waiting; dashed: where CloudAssistantRateLimiterSaturated fires).",
                   [T(rate(m.api_rate_limit_wait_seconds_total), '{{instance}} {{account}} {{region_id}}')],
                   'percentunit', 12, g.steps('green', [[c.rateLimitWaitRatio, 'red']])),
      g.row('API cost'),
      g.timeseries('API calls per hour', 'DescribeInvocationResults tries per hour at the current rate, per exporter instance and target: what counts against the rate limit you share with your own automation.',
                   [T('sum by (instance, account, region_id) (%s) * 3600' % rate(m.api_requests_total), '{{instance}} {{account}} {{region_id}}')], 'short', 12),
      g.stat('API calls per month at this rate', 'All API tries of the selected exporters and targets, extrapolated to 30 days from the current rate.',
             'sum(%s) * 86400 * 30' % rate(m.api_requests_total), 'short', 6),
      g.stat('API cost per month at this rate', 'The calls a month at this rate times the price per 10 000 calls set in the mixin (_config.apiCallPricePer10k, %s here).' % c.apiCallPricePer10k,
             'sum(%s) * 86400 * 30 / 10000 * %s' % [rate(m.api_requests_total), c.apiCallPricePer10k], 'none', 6),
      g.row('Paging and tracking'),
      g.timeseries('Pages per refresh', 'API pages the last refresh of each target fetched.',
                   [T('max by (account, region_id) (%s%s)' % [m.refresh_pages, sel()], byTarget)]),
      g.timeseries('Results truncated', '1 when the last sweep or cold walk of a target stopped at the page cap, so older results are missing (CloudAssistantResultsTruncated).',
                   [T('max by (account, region_id) (%s%s)' % [m.results_truncated, sel()], byTarget)], 'short', 12, g.steps('green', [[1, 'red']])),
      g.timeseries('Tracking state size', 'Runs the exporter keeps in its local mirror per target (bounded by tracking_cap).',
                   [T('%s (%s)' % [perTarget, rs('%s%s' % [m.tracked_runs, sel()])], byTarget)]),
      g.timeseries('Runs found by the sweep', 'Runs per second that the fast path missed and the periodic full sweep found; steadily above zero means the fast path is too narrow (CloudAssistantSweepFindsMissedRuns).',
                   [T('%s (%s)' % [perTarget, rs(rate(m.results_found_by_sweep_total))], byTarget)], 'ops'),
      g.timeseries('Invalid records', 'Records per second the exporter skipped because it could not parse them: the API schema drifted (CloudAssistantInvalidRecords).',
                   [T('%s (%s)' % [perTarget, rs(rate(m.invalid_records_total))], byTarget)], 'ops', 12, g.steps('green', [[0.000001, 'red']])),
      g.stat('CommandIds folded', 'Distinct CommandIds counted under command_id="other" because the per-command cap was hit (opt-in command_breakdown; CloudAssistantCommandIdsFolded).',
             'max(%s%s) or vector(0)' % [m.command_ids_folded, sel()], 'short', 6, g.steps('green', [[1, 'orange']])),
      g.stat('Label values folded', 'Distinct API values (statuses, error codes, API codes) counted under "other" because they were undocumented beyond the cap or too long (CloudAssistantLabelValuesFolded).',
             'max(%s%s)' % [m.label_values_folded, sel()], 'short', 6, g.steps('green', [[1, 'orange']])),
      g.row('Process'),
      g.timeseries('Resident memory', 'Resident set size of each exporter process.',
                   [T('process_resident_memory_bytes{%s}' % JOB, '{{instance}}')], 'bytes', 8),
      g.timeseries('CPU', 'CPU time per second of each exporter process (1 = one full core).',
                   [T('rate(process_cpu_seconds_total{%s}[$__rate_interval])' % JOB, '{{instance}}')], 'percentunit', 8),
      g.panel('table', 'Exporter version', "Each running exporter instance with its version and Python version (aliyun_cloudassistant_exporter_build_info).",
              [tableQuery('max by (instance, version, revision, python_version) (%s{%s})' % [m.exporter_build_info, JOB])],
              'short', 8, 8,
              extra={ transformations: [{ id: 'organize', options: { excludeByName: { Time: true, Value: true } } }] }),
    ],
  ),

  grafanaDashboards+:: {
    'cloudassistant-overview.json': overview,
    'cloudassistant-exporter.json': exporter,
  },
}
