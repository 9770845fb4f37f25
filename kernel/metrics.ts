/**
 * Metrics as CloudWatch Embedded Metric Format (EMF) lines, in the manner of Powertools'
 * Metrics (a namespace, dimension sets, `addMetric(name, unit, value)`, one JSON document per
 * flush), without its dependency: the agent runs outside Lambda, and local mode runs the
 * functions in-process, where a line on stdout would be noise.
 *
 * A line is a plain JSON object whose `_aws.CloudWatchMetrics` says which of its fields are
 * metrics and which are dimensions; CloudWatch Logs turns it into metrics when it lands in a log
 * group (Lambda's stdout, or the log file a CloudWatch agent ships for an on-prem agent). See
 * https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html
 *
 * Who writes where is the composition root's choice (`sink`): the Lambda handlers write to stdout
 * when they run in Lambda; the agent to STOWAGE_METRICS_FILE (or stdout with `-`); nobody else.
 */

export type MetricUnit = 'Count' | 'Milliseconds' | 'Seconds' | 'Bytes' | 'None';

export interface MetricDatum {
  name: string;
  unit: MetricUnit;
  value: number;
  /** 1: high resolution (alarms on periods under a minute); default 60. */
  resolution?: 1 | 60;
}

/** Where lines go: one call per line, without the newline. */
export type MetricSink = (line: string) => void;

/** The sink that drops everything (local mode's functions, tests). */
export const noMetrics: MetricSink = () => undefined;

/**
 * One EMF document: `metrics` under every dimension set of `dimensionSets` (each a list of keys
 * of `dimensions`; `[[]]` for none), with `properties` as searchable fields that are not metrics.
 */
export function emfDocument(
  namespace: string,
  metrics: readonly MetricDatum[],
  dimensions: Readonly<Record<string, string>>,
  dimensionSets: readonly (readonly string[])[],
  properties: Readonly<Record<string, unknown>> = {},
  timestamp = Date.now(),
): Record<string, unknown> {
  for (const set of dimensionSets) {
    for (const key of set) {
      if (dimensions[key] === undefined) throw new Error(`EMF dimension ${key} has no value`);
    }
  }
  const values: Record<string, number> = {};
  for (const m of metrics) values[m.name] = m.value;
  return {
    ...properties,
    ...dimensions,
    ...values,
    _aws: {
      Timestamp: timestamp,
      CloudWatchMetrics: [
        {
          Namespace: namespace,
          Dimensions: dimensionSets.map((set) => [...set]),
          Metrics: metrics.map((m) => ({
            Name: m.name,
            Unit: m.unit,
            ...(m.resolution === 1 ? { StorageResolution: 1 } : {}),
          })),
        },
      ],
    },
  };
}

/** Writes EMF documents of one namespace to a sink. */
export class Metrics {
  constructor(
    private readonly namespace: string,
    private readonly sink: MetricSink,
  ) {}

  /** Writes `metrics` now, under each of `dimensionSets` (default: all `dimensions` together). */
  publish(
    metrics: readonly MetricDatum[],
    dimensions: Readonly<Record<string, string>> = {},
    options: {
      dimensionSets?: readonly (readonly string[])[];
      properties?: Readonly<Record<string, unknown>>;
    } = {},
  ): void {
    if (metrics.length === 0) return;
    const sets = options.dimensionSets ?? [Object.keys(dimensions)];
    const doc = emfDocument(this.namespace, metrics, dimensions, sets, options.properties);
    this.sink(JSON.stringify(doc));
  }
}
