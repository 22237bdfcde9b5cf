// Types the rendered dashboards are checked against (tests/dashboard_typecheck.py generates one
// .ts file per dashboard that declares every panel with the type of its plugin). Everything comes
// from @grafana/schema; the few adjustments below are what JSON needs:
// * JSON carries enum values as strings: Json<T> turns each string enum into its literal values
//   (a wrong value is still an error);
// * plugin options and field-config `custom` are Partial where Grafana fills defaults on load;
// * the Prometheus query model is not in @grafana/schema: declared here.
// Unknown keys stay errors (object literals get TypeScript's excess property check).
import type * as schema from '@grafana/schema';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as bargauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';

export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

export interface PrometheusQuery {
  datasource: Json<schema.DataSourceRef>;
  editorMode?: 'code' | 'builder';
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  refId: string;
}

type PanelWith<Type extends string, Options, Custom> = Omit<
  Json<schema.Panel>,
  'type' | 'options' | 'fieldConfig' | 'targets'
> & {
  type: Type;
  options: Json<Partial<Options>>;
  fieldConfig: {
    defaults: Omit<Json<schema.FieldConfig>, 'custom'> & { custom?: Json<Partial<Custom>> };
    overrides: Json<schema.FieldConfigSource['overrides']>;
  };
  targets: Array<PrometheusQuery>;
};

export type StatPanel = PanelWith<'stat', stat.Options, Record<string, never>>;
export type TimeSeriesPanel = PanelWith<'timeseries', timeseries.Options, timeseries.FieldConfig>;
export type TablePanel = PanelWith<'table', table.Options, table.FieldConfig>;
export type BarGaugePanel = PanelWith<'bargauge', bargauge.Options, Record<string, never>>;
export type RowPanel = Json<schema.RowPanel>;
export type AnyPanel = StatPanel | TimeSeriesPanel | TablePanel | BarGaugePanel | RowPanel;
export type Dashboard = Omit<Json<schema.Dashboard>, 'panels'> & { panels: Array<AnyPanel> };
