// The aliyun-cloudassistant-exporter monitoring mixin: _config, prometheusAlerts, grafanaDashboards.
//   local mixin = (import 'mixin/mixin.libsonnet') + { _config+:: { exporterSelector: 'job="x"' } };
(import 'config.libsonnet')
+ (import 'alerts/alerts.libsonnet')
+ (import 'dashboards/dashboards.libsonnet')
