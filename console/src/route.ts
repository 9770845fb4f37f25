/**
 * Hash routes (`#/jobs/ID`): the API owns every path at this origin (/jobs, /points ...), so the
 * console's pages live in the fragment and the server serves one index.html.
 */
import { useEffect, useState } from 'preact/hooks';

export type Route =
  | { page: 'dashboard' }
  | { page: 'target'; target: string }
  | { page: 'restore'; point: string }
  | { page: 'job'; jobId: string }
  | { page: 'policies' }
  | { page: 'plots' };

export function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').map(safeDecode);
  switch (parts[0]) {
    case 'targets':
      if (parts[1]) return { page: 'target', target: parts[1] };
      break;
    case 'restore':
      if (parts[1]) return { page: 'restore', point: parts[1] };
      break;
    case 'jobs':
      if (parts[1]) return { page: 'job', jobId: parts[1] };
      break;
    case 'policies':
      return { page: 'policies' };
    case 'plots':
      return { page: 'plots' };
  }
  return { page: 'dashboard' };
}

export function href(route: Route): string {
  const e = encodeURIComponent;
  switch (route.page) {
    case 'dashboard':
      return '#/';
    case 'target':
      return `#/targets/${e(route.target)}`;
    case 'restore':
      return `#/restore/${e(route.point)}`;
    case 'job':
      return `#/jobs/${e(route.jobId)}`;
    case 'policies':
      return '#/policies';
    case 'plots':
      return '#/plots';
  }
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}
