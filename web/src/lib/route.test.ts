import { describe, expect, it } from "vitest";
import { paramNumber, parseRoute, routeHash } from "./route";

describe("route", () => {
  it("parses and writes #/<view>?<params>", () => {
    const { view, params } = parseRoute("#/images?n=200&model=lsr");
    expect(view).toBe("images");
    expect(params.get("model")).toBe("lsr");
    expect(routeHash(view, params)).toBe("#/images?n=200&model=lsr");
    expect(routeHash("et", new URLSearchParams())).toBe("#/et");
  });

  it("reads a number only where it is present, finite and accepted", () => {
    const params = new URLSearchParams("index=0&beta=-1&eta=x&w=2.5&blank=");
    expect(paramNumber(params, "index", -1)).toBe(0);
    expect(paramNumber(params, "missing", -1)).toBe(-1); // absent is not Number(null) = 0
    expect(paramNumber(params, "eta", 0.5)).toBe(0.5);
    expect(paramNumber(params, "w", 2)).toBe(2.5);
    expect(paramNumber(params, "beta", 25, (v) => v > 0)).toBe(25);
    expect(paramNumber(params, "blank", 25, (v) => v > 0)).toBe(25);
    expect(paramNumber(params, "blank", 25)).toBe(25); // empty is not Number("") = 0 either
    expect(paramNumber(new URLSearchParams("s=%20"), "s", 7)).toBe(7);
    expect(paramNumber(params, "w", 0, Number.isInteger)).toBe(0);
  });
});
