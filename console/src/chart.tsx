/** A uPlot time-series chart (uPlot: ~50 KB, canvas, no inline styles the CSP would refuse). */
import { useEffect, useRef } from 'preact/hooks';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { axisBytes, bytes, duration } from './format';
import type { Series } from './summary';

const COLOURS = ['#1e88e5', '#e53935', '#43a047', '#8e24aa'];

export function TimeChart(props: {
  title: string;
  series: Series;
  labels: string[];
  unit: 'bytes' | 'seconds';
  points?: boolean;
}) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!el.current) return;
    const fmt = props.unit === 'bytes' ? (v: number) => bytes(v) : (v: number) => duration(v);
    const plot = new uPlot(
      {
        title: props.title,
        width: Math.max(320, el.current.clientWidth || 800),
        height: 260,
        series: [
          {},
          ...props.labels.map((label, i) => ({
            label,
            stroke: COLOURS[i % COLOURS.length],
            width: 2,
            spanGaps: false,
            value: (_u: uPlot, v: number | null) => (v === null ? '-' : fmt(v)),
            ...(props.points ? { paths: () => null, points: { show: true, size: 7 } } : {}),
          })),
        ],
        axes: [
          {},
          {
            values: (_u, vals) =>
              props.unit === 'bytes' ? axisBytes(vals) : vals.map((v) => fmt(v)),
            size: 90,
          },
        ],
      },
      [props.series.x, ...props.series.ys] as uPlot.AlignedData,
      el.current,
    );
    return () => plot.destroy();
  }, [props.series, props.title, props.unit]);
  return <div class="chart" ref={el} />;
}
