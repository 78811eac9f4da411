/** Routes are #/<view>?<params>. */
export interface Route {
  view: string;
  params: URLSearchParams;
}

export function parseRoute(hash: string): Route {
  const body = hash.replace(/^#\/?/, "");
  const q = body.indexOf("?");
  const view = q < 0 ? body : body.slice(0, q);
  return { view, params: new URLSearchParams(q < 0 ? "" : body.slice(q + 1)) };
}

export function routeHash(view: string, params: URLSearchParams): string {
  const query = params.toString();
  return `#/${view}${query ? `?${query}` : ""}`;
}
