/** Numbers as the views show them, and as their browser tests read them. */

/** v with `digits` decimals, or "–" where it is not finite. */
export const fmt = (v: number, digits = 3): string => (Number.isFinite(v) ? v.toFixed(digits) : "–");

/** a fraction as a percentage with `digits` decimals ("12.5%"), or "–" where it is not finite. */
export const pct = (v: number, digits = 1): string => (Number.isFinite(v) ? `${(100 * v).toFixed(digits)}%` : "–");

/** As fmt, but an infinity (an LSR energy outside every support) shows as "+∞" or "−∞"; NaN
 * still shows as "–". */
export const fmtInfinity = (v: number, digits = 4): string =>
  v === Infinity ? "+∞" : v === -Infinity ? "−∞" : fmt(v, digits);

/** the JSON array of a vector, for a data- attribute the browser tests read */
export const list = (a: ArrayLike<number>): string => JSON.stringify(Array.from(a));
