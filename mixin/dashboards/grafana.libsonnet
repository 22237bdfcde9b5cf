// A few builders for Grafana dashboard JSON (schema 39), so the dashboards read as a list of
// panels. No grafonnet: it would have to be vendored, and these dashboards need little of it.
local DATASOURCE = { type: 'prometheus', uid: '${datasource}' };
local GRID_WIDTH = 24;

{
  datasource:: DATASOURCE,

  target(expr, legend='', instant=false, table=false):: {
    expr: expr,
    legend: legend,
    instant: instant,
    table: table,
  },

  local targetJson(t, refId) = {
    datasource: DATASOURCE,
    editorMode: 'code',
    expr: t.expr,
    legendFormat: if t.legend == '' then '__auto' else t.legend,
    range: !t.instant,
    instant: t.instant,
    refId: refId,
  } + (if t.table then { format: 'table' } else {}),

  // Threshold steps from (value, color) pairs; the first step starts at -infinity (null).
  steps(base, pairs=[]):: [{ color: base, value: null }] + [{ color: p[1], value: p[0] } for p in pairs],

  row(title):: { kind: 'row', title: title },

  panel(kind, title, description, targets, unit='short', width=12, height=8, steps=null, extra={}, defaults={}):: {
    kind: kind,
    title: title,
    description: description,
    targets: targets,
    unit: unit,
    width: width,
    height: height,
    steps: steps,
    extra: extra,
    defaults: defaults,
  },

  // A time series; with `steps`, the thresholds are drawn as dashed lines.
  timeseries(title, description, targets, unit='short', width=12, steps=null)::
    self.panel('timeseries', title, description, targets, unit, width, 8, steps),

  stat(title, description, expr, unit='short', width=6, steps=null, mappings=null)::
    self.panel('stat', title, description, [self.target(expr, instant=true)], unit, width, 4,
               if steps == null then self.steps('green') else steps, defaults=if mappings == null then {} else { mappings: mappings }),

  local options(kind) =
    if kind == 'timeseries' then {
      legend: { displayMode: 'list', placement: 'bottom', showLegend: true, calcs: [] },
      tooltip: { mode: 'multi', sort: 'desc' },
    } else if kind == 'stat' then {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'value',
      graphMode: 'none',
      textMode: 'auto',
      justifyMode: 'auto',
      orientation: 'auto',
      wideLayout: true,
      showPercentChange: false,
    } else if kind == 'bargauge' then {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      orientation: 'horizontal',
      displayMode: 'basic',
      showUnfilled: true,
      valueMode: 'color',
      namePlacement: 'auto',
      sizing: 'auto',
      minVizHeight: 16,
      minVizWidth: 8,
      maxVizHeight: 300,
    } else {
      showHeader: true,
      cellHeight: 'sm',
      frameIndex: 0,
    },

  local panelJson(p, id, x, y) = {
    id: id,
    type: p.kind,
    title: p.title,
    description: p.description,
    datasource: DATASOURCE,
    gridPos: { h: p.height, w: p.width, x: x, y: y },
    targets: [targetJson(p.targets[i], std.char(65 + i)) for i in std.range(0, std.length(p.targets) - 1)],
    fieldConfig: {
      defaults: { unit: p.unit, min: 0 }
                + (if p.kind == 'timeseries' then {
                     custom: {
                       drawStyle: 'line',
                       lineWidth: 1,
                       fillOpacity: 10,
                       showPoints: 'never',
                       spanNulls: false,
                       thresholdsStyle: { mode: if p.steps == null then 'off' else 'dashed' },
                     },
                   } else {})
                + (if p.steps != null then {
                     color: { mode: if p.kind == 'timeseries' then 'palette-classic' else 'thresholds' },
                     thresholds: { mode: 'absolute', steps: p.steps },
                   } else if p.kind == 'timeseries' then { color: { mode: 'palette-classic' } } else {})
                + p.defaults,
      overrides: [],
    },
    options: options(p.kind),
  } + p.extra,

  // Panels left to right, wrapping at the grid width; a row starts a new line.
  layout(items)::
    local step(state, item) =
      local id = std.length(state.panels) + 1;
      if item.kind == 'row' then
        local y = state.y + state.lineHeight;
        state {
          x: 0,
          y: y + 1,
          lineHeight: 0,
          panels+: [{
            id: id,
            type: 'row',
            title: item.title,
            collapsed: false,
            gridPos: { h: 1, w: GRID_WIDTH, x: 0, y: y },
            panels: [],
          }],
        }
      else
        local wrap = state.x + item.width > GRID_WIDTH;
        local x = if wrap then 0 else state.x;
        local y = if wrap then state.y + state.lineHeight else state.y;
        local lineHeight = if wrap then 0 else state.lineHeight;
        state {
          x: x + item.width,
          y: y,
          lineHeight: std.max(lineHeight, item.height),
          panels+: [panelJson(item, id, x, y)],
        };
    std.foldl(step, items, { x: 0, y: 0, lineHeight: 0, panels: [] }).panels,

  datasourceVariable():: {
    name: 'datasource',
    label: 'Data source',
    type: 'datasource',
    query: 'prometheus',
    hide: 0,
    includeAll: false,
    multi: false,
    options: [],
    refresh: 1,
    regex: '',
  },

  // A multi-value variable from label_values(); "All" matches any non-empty value (.+), as
  // Grafana's dashboard linter asks.
  queryVariable(name, label, query):: {
    name: name,
    label: label,
    type: 'query',
    datasource: DATASOURCE,
    query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery' },
    refresh: 2,
    includeAll: true,
    multi: true,
    allValue: '.+',
    hide: 0,
    options: [],
    regex: '',
    sort: 1,
  },

  dashboard(c, uid, title, description, variables, items):: {
    uid: uid,
    title: title,
    description: description,
    tags: c.dashboardTags,
    editable: false,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: c.dashboardRefresh,
    time: { from: 'now-6h', to: 'now' },
    timepicker: {},
    timezone: c.dashboardTimezone,
    fiscalYearStartMonth: 0,
    liveNow: false,
    annotations: {
      list: [{
        builtIn: 1,
        datasource: { type: 'grafana', uid: '-- Grafana --' },
        enable: true,
        hide: true,
        iconColor: 'rgba(0, 211, 255, 1)',
        name: 'Annotations & Alerts',
        type: 'dashboard',
      }],
    },
    links: [{
      title: 'Cloud Assistant dashboards',
      type: 'dashboards',
      icon: 'external link',
      tooltip: '',
      targetBlank: false,
      tags: ['cloud-assistant'],
      asDropdown: true,
      includeVars: true,
      keepTime: true,
    }],
    templating: { list: variables },
    panels: $.layout(items),
  },
}
