/** The web console: a Preact app on hash routes, talking to the HTTP API at its own origin. */
import '@picocss/pico/css/pico.min.css';
import './styles.css';
import { render } from 'preact';
import { useState } from 'preact/hooks';
import { hasToken, signInFromFragment, signOut } from './api';
import { Dashboard } from './pages/dashboard';
import { JobPage } from './pages/job';
import { PlotsPage } from './pages/plots';
import { PoliciesPage } from './pages/policies';
import { RestorePage } from './pages/restore';
import { TargetPage } from './pages/target';
import { href, useRoute, type Route } from './route';

signInFromFragment();

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

function App() {
  const route = useRoute();
  const [signedIn, setSignedIn] = useState(hasToken);
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
            {signedIn ? (
              <li>
                <a
                  href="#/"
                  class="secondary"
                  onClick={() => {
                    signOut();
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
        {!signedIn ? (
          <p class="note" id="signed-out">
            Not signed in: open the <code>console:</code> link <code>stowage start</code> printed
            (it carries the API token).
          </p>
        ) : null}
        <Page route={route} />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
