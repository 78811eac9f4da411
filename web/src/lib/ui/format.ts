/** Numbers as the views show them, and as their browser tests read them. */

/** v with `digits` decimals, or "–" where it is not finite. */
export const fmt = (v: number, digits = 3): string => (Number.isFinite(v) ? v.toFixed(digits) : "–");

/** v with `digits` decimals, or where it is not finite (an LSR energy outside every support)
 * "+∞" when positive, else "−∞". */
export const fmtInfinity = (v: number, digits = 4): string =>
  Number.isFinite(v) ? v.toFixed(digits) : v > 0 ? "+∞" : "−∞";

/** the JSON array of a vector, for a data- attribute the browser tests read */
export const list = (a: ArrayLike<number>): string => JSON.stringify(Array.from(a));
