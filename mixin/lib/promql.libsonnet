// Small helpers that every rule and panel uses, so selectors and groupings are written once.
{
  // `{<exporter selector>, <extra matchers>}`
  sel(c, extra=''):: '{' + c.exporterSelector + (if extra == '' then '' else ', ' + extra) + '}',
  // The labels a per-target aggregation keeps: cluster, namespace, job, then account, region_id.
  target(c, extra=[]):: std.join(', ', c.keepLabels + ['account', 'region_id'] + extra),
  replicas(c):: std.join(', ', c.replicaLabels),
  // One value per target (and extra labels) however many replicas report it: the max over the
  // replicas first, then the sum over everything else (statuses, codes).
  replicaSafeSum(c, inner, extra=[])::
    'sum by (%s) (\n  max without (%s) (\n    %s\n  )\n)' % [$.target(c, extra), $.replicas(c), inner],
  regex(values):: std.join('|', values),
  // '90s', '15m', '1h', '2d' in seconds, for comparisons with timestamps.
  seconds(duration)::
    local n = std.length(duration);
    std.parseInt(std.substr(duration, 0, n - 1)) * { s: 1, m: 60, h: 3600, d: 86400 }[std.substr(duration, n - 1, 1)],
  // The latest sample of a gauge within scrapeGapTolerance: one failed scrape (an exporter
  // restarting, a slow answer) or a pod replaced under a new instance then neither resolves an
  // alert nor restarts its `for:`; a series that is gone for good ends the alert after it.
  last(c, series, offset=null)::
    'last_over_time(%s[%s]%s)' % [series, c.scrapeGapTolerance, if offset == null then '' else ' offset ' + offset],
}
