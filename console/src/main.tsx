/**
 * The web console: a Preact app on hash routes, talking to the HTTP API. The same build runs in
 * both modes: /config.json says which (cloud/config.ts). In local mode the API is at the page's
 * origin and the sign-in is the API token from the `console:` link; in AWS the person signs in
 * with Cognito and every call is signed with SigV4 (cloud/session.ts, loaded only then).
 */
import '@picocss/pico/css/pico.min.css';
import './styles.css';
import { render } from 'preact';
import { useState } from 'preact/hooks';
import { hasToken, signInFromFragment, signOut, useTransport } from './api';
import { readCloudConfig } from './cloud/config';
import type { CloudSession } from './cloud/session';
import { Dashboard } from './pages/dashboard';
import { JobPage } from './pages/job';
import { PlotsPage } from './pages/plots';
import { PoliciesPage } from './pages/policies';
import { RestorePage } from './pages/restore';
import { TargetPage } from './pages/target';
import { href, useRoute, type Route } from './route';

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case 'dashboard':
      return <Dashboard />;
    case 'target':
      return <TargetPage target={route.target} />;
    case 'restore':
      return <RestorePage point={route.point} />;
    case 'job':
      return <JobPage jobId={route.jobId} />;
    case 'policies':
      return <PoliciesPage />;
    case 'plots':
      return <PlotsPage />;
  }
}

/** How this page signs in: the API token (local mode) or Cognito (AWS). */
interface Auth {
  signedIn: () => boolean;
  /** Who is signed in, shown beside Sign out (AWS only). */
  who?: string;
  signIn?: () => void;
  signOut: () => void;
  /** Why the last sign-in failed, if it did. */
  failure?: string;
}

function localAuth(): Auth {
  signInFromFragment();
  return { signedIn: hasToken, signOut };
}

async function cloudAuth(session: CloudSession): Promise<Auth> {
  let failure: string | undefined;
  try {
    await session.start();
  } catch (err) {
    failure = `sign-in failed: ${(err as Error).message}`;
  }
  useTransport(session.transport);
  const who = session.who;
  return {
    signedIn: () => session.signedIn,
    ...(who ? { who: `${who.name}${who.groups.length ? ` (${who.groups.join(', ')})` : ''}` } : {}),
    signIn: () => void session.signIn(),
    signOut: () => void session.signOut(),
    ...(failure ? { failure } : {}),
  };
}

function App({ auth }: { auth: Auth }) {
  const route = useRoute();
  const [signedIn, setSignedIn] = useState(auth.signedIn);
  const nav = (to: Route, label: string) => (
    <li>
      <a href={href(to)} aria-current={route.page === to.page ? 'page' : undefined}>
        {label}
      </a>
    </li>
  );
  return (
    <>
      <header class="container-fluid">
        <nav>
          <ul>
            <li>
              <strong>Stowage</strong>
            </li>
          </ul>
          <ul>
            {nav({ page: 'dashboard' }, 'Dashboard')}
            {nav({ page: 'policies' }, 'Policies')}
            {nav({ page: 'plots' }, 'Plots')}
            {signedIn && auth.who ? (
              <li>
                <small id="signed-in-as">{auth.who}</small>
              </li>
            ) : null}
            {signedIn ? (
              <li>
                <a
                  href="#/"
                  class="secondary"
                  onClick={() => {
                    auth.signOut();
                    setSignedIn(false);
                  }}
                >
                  Sign out
                </a>
              </li>
            ) : null}
          </ul>
        </nav>
      </header>
      <main class="container-fluid">
        {auth.failure ? (
          <p class="error" id="sign-in-failed">
            {auth.failure}
          </p>
        ) : null}
        {!signedIn && auth.signIn ? (
          <section id="signed-out">
            <p>Sign in with your Stowage account (Cognito).</p>
            <button type="button" id="sign-in" onClick={auth.signIn}>
              Sign in
            </button>
          </section>
        ) : null}
        {!signedIn && !auth.signIn ? (
          <p class="note" id="signed-out">
            Not signed in: open the <code>console:</code> link <code>stowage start</code> printed
            (it carries the API token).
          </p>
        ) : null}
        {/* In AWS nothing can be read before signing in, so no page asks. */}
        {signedIn || !auth.signIn ? <Page route={route} /> : null}
      </main>
    </>
  );
}

async function boot(): Promise<void> {
  const config = await readCloudConfig();
  let auth: Auth;
  if (config) {
    const { CloudSession } = await import('./cloud/session');
    auth = await cloudAuth(new CloudSession(config));
  } else {
    auth = localAuth();
  }
  render(<App auth={auth} />, document.getElementById('app')!);
}

void boot();
