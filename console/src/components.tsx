/** Small pieces every page uses: polling, a job's progress, a status badge, a labelled field. */
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import type { Job, JobProgress } from '../../kernel/model';
import { ApiError } from './api';
import { bytes, duration, fraction, rate } from './format';
import { href } from './route';

export interface Polled<T> {
  data?: T;
  error?: ApiError;
  reload(): void;
}

/**
 * Calls `load` now and every `everyMs` while the page shows (never two at once); `deps` restart
 * it. A failed poll keeps the last data and shows the error.
 */
export function usePoll<T>(
  load: () => Promise<T>,
  everyMs: number,
  deps: unknown[] = [],
): Polled<T> {
  const [state, setState] = useState<{ data?: T; error?: ApiError }>({});
  const loadRef = useRef(load);
  loadRef.current = load;
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        const data = await loadRef.current();
        if (!stopped) setState({ data });
      } catch (err) {
        if (!stopped) setState((s) => ({ ...s, error: err as ApiError }));
      }
      if (!stopped && everyMs > 0) timer = setTimeout(run, everyMs);
    };
    void run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [everyMs, tick, ...deps]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { ...state, reload };
}

export function Status({ status }: { status: string }) {
  return <span class={`status status-${status.toLowerCase()}`}>{status}</span>;
}

export function JobLink({ jobId }: { jobId: string }) {
  return (
    <a href={href({ page: 'job', jobId })} class="mono">
      {jobId}
    </a>
  );
}

export function TargetLink({ target }: { target: string }) {
  return <a href={href({ page: 'target', target })}>{target}</a>;
}

/** Bytes done (of the total), a bar when the total is known, rate and ETA. */
export function ProgressLine({ progress }: { progress: JobProgress | undefined }) {
  if (!progress) return <span class="muted">waiting for an agent</span>;
  const f = fraction(progress.bytesDone, progress.bytesTotal);
  return (
    <div class="progress" data-bytes-done={progress.bytesDone}>
      {f !== undefined ? <progress value={Math.round(f * 1000)} max={1000} /> : <progress />}
      <span class="progress-text">
        {progress.phase}: <b class="bytes-done">{bytes(progress.bytesDone)}</b>
        {progress.bytesTotal !== undefined ? ` of ${bytes(progress.bytesTotal)}` : ''}
        {f !== undefined ? ` (${Math.floor(f * 100)} %)` : ''} · {rate(progress.rate)}
        {progress.etaSeconds !== undefined ? ` · ETA ${duration(progress.etaSeconds)}` : ''}
        {progress.bytesNew !== undefined ? ` · new ${bytes(progress.bytesNew)}` : ''}
      </span>
    </div>
  );
}

/** A running job's progress: its own, or summed over its items (a backup of several targets). */
export function jobProgress(job: Job): JobProgress | undefined {
  const items = (job.items ?? []).filter((i) => i.progress);
  if (items.length <= 1) return job.progress ?? items[0]?.progress;
  const sum = (f: (p: JobProgress) => number | undefined) =>
    items.reduce((n, i) => n + (f(i.progress!) ?? 0), 0);
  const total = items.every((i) => i.progress!.bytesTotal !== undefined)
    ? sum((p) => p.bytesTotal)
    : undefined;
  const r = sum((p) => p.rate);
  const done = sum((p) => p.bytesDone);
  return {
    phase: `${items.length} targets`,
    bytesDone: done,
    ...(total !== undefined ? { bytesTotal: total } : {}),
    rate: r,
    ...(total !== undefined && r > 0 ? { etaSeconds: (total - done) / r } : {}),
    updatedAt: items[0]!.progress!.updatedAt,
  };
}

export function ErrorNote({ error }: { error: ApiError | Error | undefined }) {
  if (!error) return null;
  const name = error instanceof ApiError ? error.error : error.name;
  return (
    <p class="error-note" role="alert">
      <b>{name}</b>: {error.message}
    </p>
  );
}

/** A form field with its label, and its message right under it when it is refused. */
export function Field(props: {
  label: string;
  name: string;
  error?: string | undefined;
  hint?: string;
  children: ComponentChildren;
}) {
  return (
    <label class="field" data-field={props.name}>
      <span class="field-label">{props.label}</span>
      {props.children}
      {props.error ? (
        <small class="field-error" id={`${props.name}-error`} role="alert">
          {props.error}
        </small>
      ) : props.hint ? (
        <small class="muted">{props.hint}</small>
      ) : null}
    </label>
  );
}

export function Section(props: { title: string; id?: string; children: ComponentChildren }) {
  return (
    <section id={props.id}>
      <h2>{props.title}</h2>
      {props.children}
    </section>
  );
}
