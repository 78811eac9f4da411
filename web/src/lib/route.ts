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

/** The number `key` of a route's params where it is present, finite and accepted by `ok`;
 * otherwise `fallback` (an absent or empty key is not 0). */
export function paramNumber(
  params: URLSearchParams,
  key: string,
  fallback: number,
  ok: (v: number) => boolean = () => true,
): number {
  const raw = params.get(key)?.trim();
  const v = Number(raw);
  return raw && Number.isFinite(v) && ok(v) ? v : fallback;
}
