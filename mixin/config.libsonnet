// The one place for every tunable of the alerts and dashboards. Override any key with
//   (import 'mixin.libsonnet') + { _config+:: { exporterSelector: 'job="my-job"' } }
// The rendered files in alerts/, dashboards/ and deploy/kubernetes/ use these defaults.
local metrics = import 'lib/metrics.libsonnet';

{
  _config+:: {
    // Selects the exporter's scrape job: `up`, the absence alert and the dashboards' $job list.
    exporterSelector: 'job="aliyun-cloudassistant-exporter"',
    // The selector whose complete absence raises CloudAssistantExporterAbsent (target gone from
    // service discovery). Use equality matchers: absent() copies them onto the alert.
    absentSelector: self.exporterSelector,
    absentFor: '15m',
    exporterDownFor: '5m',
    // Fewer distinct shards (--shard ordinals) report than --total-shards says for this long: a
    // shard is gone from service discovery (a Pending or deleted pod) while the others run, which
    // neither the absence alert (some `up` is left) nor the down alert (no `up == 0`) can see.
    shardMissingFor: '10m',

    // Labels that tell exporter replicas of one HA pair apart. Run-based rules take the max over
    // them before summing anything, so two replicas never double a count.
    replicaLabels: ['instance', 'pod'],
    // Labels every aggregation keeps, so a central ruler keeps clusters apart and inhibit rules
    // can match an alert to CloudAssistantExporterDown.
    showMultiCluster: false,  // adds the cluster variable to the dashboards
    clusterLabel: 'cluster',
    keepLabels: [self.clusterLabel, 'namespace', 'job'],

    // Refresh failures: the window of increase(refresh_failures_total) and how long before alerting.
    refreshFailureWindow: '10m',
    credentialsFailingFor: '5m',
    throttledFailingFor: '15m',
    apiUnavailableFor: '10m',
    refreshFailingFor: '15m',
    // The last successful refresh is older than this while no refresh failed: a refresh hangs.
    refreshStaleSeconds: 900,
    refreshStaleFor: '5m',
    // Share of API requests answered with throttling, even when the retries succeeded.
    apiThrottlingWindow: '15m',
    apiThrottlingRatio: 0.1,
    apiThrottlingFor: '15m',
    // Seconds per second spent waiting on the exporter's own token bucket (1 = always waiting).
    rateLimitWaitRatio: 0.5,
    rateLimitWindow: '15m',
    rateLimitFor: '30m',
    resultsTruncatedFor: '30m',
    // Runs the fast path missed and the sweep found, and records the exporter could not parse.
    sweepWindow: '1h',
    sweepFoundMin: 1,
    sweepFoundFor: '30m',
    invalidRecordsWindow: '1h',
    invalidRecordsFor: '15m',
    commandIdsFoldedFor: '1h',
    labelValuesFoldedFor: '1h',
    // The exporter process itself: a refused configuration reload (like PrometheusBadConfig), state
    // files moved aside at start (fires for stateResetWindow after the start), a first walk that
    // never ends, and a host clock this far from the API's (the API refuses beyond 15 minutes).
    configReloadFailedFor: '10m',
    stateResetWindow: '1h',
    stateResetFor: '1m',
    firstWalkIncompleteFor: '1h',
    clockOffsetSeconds: 300,
    clockSkewFor: '15m',

    // Finished runs: the window every run-based alert reads.
    finishedWindow: '15m',
    // The InvocationStatus values that count as failed (the exporter's contract by default).
    failureStatuses: metrics.failureStatuses,
    failureRatio: 0.2,
    failureMinFinished: 10,
    failureRatioFor: '15m',
    // Fleet-wide: the failed share of every run of one exporter job (all accounts and regions).
    fleetFailureRatio: 0.5,
    fleetFailureMinFinished: 50,
    fleetFailureFor: '10m',
    // Per command (opt-in command_breakdown counters).
    commandFailureRatio: 0.5,
    commandFailureMinFinished: 5,
    commandFailureFor: '15m',
    executionTimeoutMin: 3,
    deliveryTimeoutMin: 3,
    agentUnavailableMin: 1,
    securityGroupDeniedMin: 1,
    instanceGoneMin: 5,
    errorCodeFor: '5m',
    // Low-threshold alerts keep firing this long after the condition clears, so events a few
    // minutes apart give one notification sequence instead of a page and a resolve per event.
    keepFiringFor: '15m',
    stuckRunningSeconds: 10800,
    stuckRunningFor: '15m',
    // How long a gauge a `for:` alert reads may miss its samples (a failed scrape, a pod being
    // rescheduled under a new instance) before the alert ends; a removed target's alert ends
    // after it too.
    scrapeGapTolerance: '5m',
    // Pending and Stopping have no age metric: a status that never empties for this long is stuck.
    stuckTransitionWindow: '1h',
    stuckTransitionFor: '15m',
    ossFailureWindow: '30m',
    ossFailureMin: 1,
    ossFailureFor: '5m',
    droppedWindow: '1h',
    droppedMinIncrements: 3,
    droppedFor: '15m',

    // Where the runbook_url and dashboard_url annotations point.
    runbookUrlBase: 'https://github.com/aliyun-cloudassistant-exporter/aliyun-cloudassistant-exporter/blob/main/docs/runbooks.md',
    dashboardUrlBase: 'http://grafana.example.com/d',

    // Dashboards.
    dashboardTags: ['aliyun', 'cloud-assistant', 'ecs'],
    dashboardRefresh: '1m',
    dashboardTimezone: 'browser',
    // The documented scrape interval (ServiceMonitor, README): Grafana's minimum step.
    scrapeInterval: '60s',
    // Price of 10 000 DescribeInvocationResults calls in your currency, for the cost panel
    // (0 shows calls only). Alibaba Cloud does not bill these calls today.
    apiCallPricePer10k: 0,
  },
}
