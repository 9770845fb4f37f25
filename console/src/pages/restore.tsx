/**
 * The restore form: under a new name, in place, or on another agent, with the platform's remaps;
 * each field's problem is shown next to it (checked here by the API's own rules, and again by
 * the API). "Plan" asks the API for the restore's plan (POST /restores with "plan": true: what
 * it creates, replaces, stops, starts and remaps, and the bytes it reads; nothing changes);
 * only a planned form can run, and any change to the form asks for a new plan.
 */
import { useState } from 'preact/hooks';
import { Api, ApiError, type RestorePlan } from '../api';
import { ErrorNote, Field, JobLink, Section, TargetLink, usePoll } from '../components';
import { bytes, time } from '../format';
import {
  describe,
  emptyForm,
  fieldOfRefusal,
  optionFields,
  splitTarget,
  toBody,
  validate,
  type FieldErrors,
  type RestoreForm,
} from '../restore-form';
import { href } from '../route';

export function RestorePage({ point: pointId }: { point: string }) {
  const point = usePoll(() => Api.point(pointId), 0, [pointId]);
  const agents = usePoll(() => Api.agents(), 0);
  const [form, setForm] = useState<RestoreForm>(emptyForm);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [busy, setBusy] = useState(false);
  const [started, setStarted] = useState<string>();
  const [plan, setPlan] = useState<RestorePlan>();
  const p = point.data;
  if (point.error) return <ErrorNote error={point.error} />;
  if (!p) return <p aria-busy="true">Loading {pointId}…</p>;
  const [platform, sourceName] = splitTarget(p.target);
  const fields = optionFields(platform);
  const volumes = p.streams
    .filter((s) => s.name.startsWith('volume/'))
    .map((s) => s.name.slice('volume/'.length));
  const set = <K extends keyof RestoreForm>(key: K, value: RestoreForm[K]) => {
    const next = { ...form, [key]: value };
    setForm(next);
    setPlan(undefined);
    // Once a field was refused, its message follows what is typed.
    if (Object.keys(errors).length) setErrors(validate(next, p.target));
  };
  /** Checks the form, then asks the API for the plan, or (once planned) runs the restore. */
  const submit = async (e: Event) => {
    e.preventDefault();
    const found = validate(form, p.target);
    setErrors(found);
    if (Object.keys(found).length) return;
    setBusy(true);
    try {
      const body = toBody(form, p.recoveryPointId, p.target);
      if (!plan) {
        setPlan(await Api.planRestore(body));
      } else {
        setStarted((await Api.restore(body)).jobId);
      }
    } catch (err) {
      const e2 = err as ApiError;
      setPlan(undefined);
      setErrors({ [fieldOfRefusal(e2.error, e2.message, form)]: `${e2.message}` });
    } finally {
      setBusy(false);
    }
  };
  const invalid = (key: string) =>
    errors[key] ? { 'aria-invalid': true as const, 'aria-describedby': `${key}-error` } : {};
  return (
    <Section title={`Restore ${p.recoveryPointId}`} id="restore">
      <p>
        Of <TargetLink target={p.target} />, taken {time(p.createdAt)} on agent {p.agent},{' '}
        {bytes(p.bytesRead)} in {p.streams.length} stream{p.streams.length === 1 ? '' : 's'}.
      </p>
      <form onSubmit={submit} noValidate class="restore-form">
        <fieldset>
          <legend>Where to</legend>
          <label>
            <input
              type="radio"
              name="mode"
              value="name"
              checked={form.mode === 'name'}
              onChange={() => set('mode', 'name')}
            />
            Under a new name, beside the original
          </label>
          <label>
            <input
              type="radio"
              name="mode"
              value="inPlace"
              checked={form.mode === 'inPlace'}
              onChange={() => set('mode', 'inPlace')}
            />
            In place: replace {p.target}
          </label>
          <label>
            <input
              type="radio"
              name="mode"
              value="agent"
              checked={form.mode === 'agent'}
              onChange={() => set('mode', 'agent')}
            />
            On another agent
          </label>
        </fieldset>
        {form.mode !== 'inPlace' ? (
          <Field
            label={
              platform === 'path'
                ? 'Destination path'
                : form.mode === 'agent'
                  ? `Name there (default ${sourceName})`
                  : 'New name'
            }
            name="name"
            error={errors.name}
          >
            <input
              name="name"
              value={form.name}
              onInput={(e) => set('name', e.currentTarget.value)}
              {...invalid('name')}
            />
          </Field>
        ) : null}
        {form.mode === 'agent' ? (
          <Field label="Agent" name="agent" error={errors.agent}>
            <select
              name="agent"
              value={form.agent}
              onChange={(e) => set('agent', e.currentTarget.value)}
              {...invalid('agent')}
            >
              <option value="">choose…</option>
              {(agents.data ?? []).map((a) => (
                <option key={a.agent} value={a.agent}>
                  {a.agent} ({a.platforms.join(', ')})
                </option>
              ))}
            </select>
          </Field>
        ) : null}
        {fields.includes('volumes') && volumes.length ? (
          <fieldset>
            <legend>Volume names (empty: the default)</legend>
            {volumes.map((v) => (
              <Field key={v} label={v} name={`volumes.${v}`} error={errors[`volumes.${v}`]}>
                <input
                  name={`volumes.${v}`}
                  value={form.volumes[v] ?? ''}
                  onInput={(e) => set('volumes', { ...form.volumes, [v]: e.currentTarget.value })}
                  {...invalid(`volumes.${v}`)}
                />
              </Field>
            ))}
          </fieldset>
        ) : null}
        {fields.includes('network') ? (
          <Field label="Network (empty: as at backup)" name="network" error={errors.network}>
            <input
              name="network"
              value={form.network}
              onInput={(e) => set('network', e.currentTarget.value)}
              {...invalid('network')}
            />
          </Field>
        ) : null}
        {fields.includes('ports') ? (
          <Field
            label="Published ports"
            name="ports"
            error={errors.ports}
            hint="container=host, e.g. 80/tcp=8081; an empty host port drops it"
          >
            <input
              name="ports"
              value={form.ports}
              onInput={(e) => set('ports', e.currentTarget.value)}
              {...invalid('ports')}
            />
          </Field>
        ) : null}
        {fields.includes('pool') ? (
          <Field label="Storage pool (empty: as at backup)" name="pool" error={errors.pool}>
            <input
              name="pool"
              value={form.pool}
              onInput={(e) => set('pool', e.currentTarget.value)}
              {...invalid('pool')}
            />
          </Field>
        ) : null}
        {fields.includes('state') ? (
          <Field label="State afterwards" name="state" error={errors.state}>
            <select
              name="state"
              value={form.state}
              onChange={(e) => set('state', e.currentTarget.value as RestoreForm['state'])}
            >
              <option value="">as at backup time</option>
              <option value="running">running</option>
              <option value="stopped">stopped</option>
            </select>
          </Field>
        ) : null}
        <p class="plan" data-plan>
          {describe(form, p.recoveryPointId, p.target)}
        </p>
        {errors.form ? (
          <p class="field-error" role="alert" id="form-error">
            {errors.form}
          </p>
        ) : null}
        {plan ? (
          <article class="restore-plan" data-restore-plan>
            <header>
              Plan: {plan.source} → {plan.target} on agent {plan.agent}, reading{' '}
              {bytes(plan.bytesRead)} from {plan.streams.length} stream
              {plan.streams.length === 1 ? '' : 's'}
            </header>
            <ol>
              {plan.steps.map((step, n) => (
                <li key={n} data-action={step.action}>
                  <b>{step.action}</b> {step.what}
                  {step.detail ? <span class="muted"> ({step.detail})</span> : null}
                </li>
              ))}
            </ol>
            {plan.notes.length ? (
              <ul class="muted">
                {plan.notes.map((note, n) => (
                  <li key={n}>{note}</li>
                ))}
              </ul>
            ) : null}
          </article>
        ) : null}
        <button type="submit" aria-busy={busy} disabled={busy || !!started}>
          {!plan ? 'Plan' : form.mode === 'inPlace' ? 'Replace the original' : 'Restore'}
        </button>
      </form>
      {started ? (
        <p class="started">
          Restore started as <JobLink jobId={started} />:{' '}
          <a href={href({ page: 'job', jobId: started })}>follow it</a>.
        </p>
      ) : null}
    </Section>
  );
}
