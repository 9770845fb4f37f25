/**
 * The dashboard: running jobs with live progress and Cancel, the last result of every protected
 * target, policies (missed or failed runs flagged), agents with their last report and engines.
 */
import { useState } from 'preact/hooks';
import type { Job, Policy, RecoveryPoint } from '../../../kernel/model';
import { Api, ApiError, type ListedPoint } from '../api';
import {
  ErrorNote,
  JobLink,
  jobProgress,
  ProgressLine,
  Section,
  Status,
  TargetLink,
  usePoll,
} from '../components';
import { ago, bytes } from '../format';
import { lastResults } from '../summary';

const ACTIVE = ['PENDING', 'RUNNING'];

export function Dashboard() {
  const jobs = usePoll(() => Api.jobs(200), 1000);
  const points = usePoll(() => Api.points(undefined, 1000), 5000);
  const policies = usePoll(() => Api.policies(), 5000);
  const agents = usePoll(() => Api.agents(), 5000);
  const offsite = (points.data ?? []).filter(
    (p): p is ListedPoint & RecoveryPoint & { tier: 'offsite' } => p.tier === 'offsite',
  );
  const running = (jobs.data ?? []).filter((j) => ACTIVE.includes(j.status));
  return (
    <>
      <Section title="Running jobs" id="running">
        <ErrorNote error={jobs.error} />
        {running.length === 0 ? (
          <p class="muted">No job is running.</p>
        ) : (
          <table class="running-jobs">
            <thead>
              <tr>
                <th>Job</th>
                <th>Kind</th>
                <th>Target</th>
                <th>Status</th>
                <th>Progress</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {running.map((j) => (
                <RunningJob key={j.jobId} job={j} onChange={jobs.reload} />
              ))}
            </tbody>
          </table>
        )}
      </Section>
      <Section title="Protected targets" id="targets">
        <ErrorNote error={points.error} />
        <LastResults jobs={jobs.data ?? []} points={offsite} policies={policies.data ?? []} />
      </Section>
      <Section title="Policies" id="policies">
        <ErrorNote error={policies.error} />
        <PolicyFlags policies={policies.data ?? []} />
      </Section>
      <Section title="Agents" id="agents">
        <ErrorNote error={agents.error} />
        <table>
          <thead>
            <tr>
              <th>Agent</th>
              <th>Last report</th>
              <th>Engines</th>
              <th>Targets</th>
              <th>Version</th>
            </tr>
          </thead>
          <tbody>
            {(agents.data ?? []).map((a) => (
              <tr key={a.agent}>
                <td>{a.agent}</td>
                <td title={a.seenAt}>{ago(a.seenAt)}</td>
                <td>{a.platforms.join(', ') || <span class="muted">none found</span>}</td>
                <td>{a.targets.length}</td>
                <td class="mono">{a.version}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Section>
    </>
  );
}

function RunningJob({ job, onChange }: { job: Job; onChange(): void }) {
  const [error, setError] = useState<ApiError>();
  const [asked, setAsked] = useState(false);
  const [answer, setAnswer] = useState<string>();
  const cancel = async () => {
    setAsked(true);
    try {
      const out = (await Api.cancel(job.jobId)) as { cancelled?: boolean; message?: string };
      // An in-place restore past its point of no return finishes: the answer says so.
      if (out?.cancelled === false && out.message) setAnswer(out.message);
      onChange();
    } catch (err) {
      setError(err as ApiError);
      setAsked(false);
    }
  };
  return (
    <tr data-job={job.jobId}>
      <td>
        <JobLink jobId={job.jobId} />
      </td>
      <td>{job.kind}</td>
      <td>{job.target}</td>
      <td>
        <Status status={job.status} />
      </td>
      <td>
        <ProgressLine progress={jobProgress(job)} />
        <ErrorNote error={error} />
        {answer ? <p class="note">{answer}</p> : null}
      </td>
      <td>
        <button class="secondary cancel" disabled={asked} onClick={cancel}>
          {asked ? 'Cancelling…' : 'Cancel'}
        </button>
      </td>
    </tr>
  );
}

function LastResults(props: { jobs: Job[]; points: RecoveryPoint[]; policies: Policy[] }) {
  const rows = lastResults(props.jobs, props.points, props.policies);
  if (rows.length === 0) return <p class="muted">Nothing is protected yet.</p>;
  return (
    <table class="last-results">
      <thead>
        <tr>
          <th>Target</th>
          <th>Last backup</th>
          <th>When</th>
          <th>Newest point</th>
          <th>Size</th>
          <th>Policies</th>
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr key={r.target} data-target={r.target}>
            <td>
              <TargetLink target={r.target} />
            </td>
            <td>
              {r.status ? <Status status={r.status} /> : <span class="muted">-</span>}{' '}
              {r.jobId ? <JobLink jobId={r.jobId} /> : null}
              {r.error ? <div class="error-text">{r.error}</div> : null}
            </td>
            <td title={r.at}>{ago(r.at ?? r.point?.createdAt)}</td>
            <td class="mono">{r.point?.recoveryPointId ?? '-'}</td>
            <td>{bytes(r.point?.bytesRead)}</td>
            <td>{r.policies.join(', ') || <span class="muted">none</span>}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function PolicyFlags({ policies }: { policies: Array<Policy & { lastStatus?: string }> }) {
  if (policies.length === 0) {
    return (
      <p class="muted">
        No policy yet: <a href="#/policies">create one</a>.
      </p>
    );
  }
  return (
    <table>
      <thead>
        <tr>
          <th>Policy</th>
          <th>Schedule</th>
          <th>Last run</th>
          <th>Next run</th>
          <th>Attention</th>
        </tr>
      </thead>
      <tbody>
        {policies.map((p) => (
          <tr key={p.name} class={p.flag ? 'flagged' : ''} data-policy={p.name}>
            <td>
              <a href="#/policies">{p.name}</a>
            </td>
            <td class="mono">{p.schedule}</td>
            <td>
              {p.lastStatus ? <Status status={p.lastStatus} /> : null} {ago(p.lastRunAt)}
            </td>
            <td title={p.nextRunAt}>{ago(p.nextRunAt)}</td>
            <td>{p.flag ? <span class="flag">⚠ {p.flag}</span> : <span class="muted">ok</span>}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
