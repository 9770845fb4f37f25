/** Plots: bytes protected and stored over time, and job durations. */
import type { RecoveryPoint } from '../../../kernel/model';
import { Api } from '../api';
import { TimeChart } from '../chart';
import { ErrorNote, Section, usePoll } from '../components';
import { bytesOverTime, jobDurations } from '../summary';

export function PlotsPage() {
  const points = usePoll(() => Api.points(undefined, 1000), 15_000);
  const jobs = usePoll(() => Api.jobs(1000), 15_000);
  const offsite = (points.data ?? []).filter((p) => p.tier === 'offsite') as RecoveryPoint[];
  return (
    <>
      <Section title="Bytes protected and stored" id="plot-bytes">
        <ErrorNote error={points.error} />
        {offsite.length ? (
          <TimeChart
            title="After each recovery point"
            series={bytesOverTime(offsite)}
            labels={['protected (newest point of each target)', 'stored (sum of new stored bytes)']}
            unit="bytes"
          />
        ) : (
          <p class="muted">No recovery point yet.</p>
        )}
      </Section>
      <Section title="Job durations" id="plot-durations">
        <ErrorNote error={jobs.error} />
        {jobs.data?.some((j) => j.endedAt && j.startedAt) ? (
          <TimeChart
            title="Each finished job, at its end"
            series={jobDurations(jobs.data)}
            labels={['backup', 'restore']}
            unit="seconds"
            points
          />
        ) : (
          <p class="muted">No finished job yet.</p>
        )}
      </Section>
    </>
  );
}
