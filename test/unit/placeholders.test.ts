import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createPlaceholder, placeholderFor, removePlaceholder } from "../../lib/sandbox/placeholders.ts";

const root = mkdtempSync("/tmp/pt-ph-unit-");
afterAll(() => rmSync(root, { recursive: true, force: true }));

test("placeholderFor: the first missing component; a dir when more follow or the path ends in /", () => {
  const fake: Record<string, "dir" | "other"> = { "/": "dir", "/p": "dir", "/p/f": "other" };
  const exists = (x: string) => fake[x] ?? null;
  expect(placeholderFor("/p/.env", exists)).toEqual({ path: "/p/.env", parent: "/p", kind: "file" });
  expect(placeholderFor("/p/secrets/", exists)).toEqual({ path: "/p/secrets", parent: "/p", kind: "dir" });
  expect(placeholderFor("/p/a/b/key", exists)).toEqual({ path: "/p/a", parent: "/p", kind: "dir" });
  // Existing, or below a file (nothing can appear there without replacing the file): nothing to hold.
  expect(placeholderFor("/p/f", exists)).toBeNull();
  expect(placeholderFor("/p/f/x", exists)).toBeNull();
});

test("createPlaceholder never goes through a symlink nor over an existing entry", () => {
  const real = join(root, "real");
  mkdirSync(real);
  symlinkSync(real, join(root, "link"));
  expect(() => createPlaceholder(join(root, "link"), "x", "file", null)).toThrow();
  writeFileSync(join(real, "taken"), "mine\n");
  expect(() => createPlaceholder(real, "taken", "file", null)).toThrow();
  symlinkSync("/etc/passwd", join(real, "planted"));
  expect(() => createPlaceholder(real, "planted", "file", null)).toThrow();
  expect(readdirSync(real).sort()).toEqual(["planted", "taken"]);
});

test("removePlaceholder removes only the empty entry it made", () => {
  const d = join(root, "rm");
  mkdirSync(d);
  const f = { path: join(d, ".env"), kind: "file" as const, ...createPlaceholder(d, ".env", "file", null) };
  const g = { path: join(d, "vault"), kind: "dir" as const, ...createPlaceholder(d, "vault", "dir", null) };
  const h = { path: join(d, "h"), kind: "file" as const, ...createPlaceholder(d, "h", "file", null) };
  expect(removePlaceholder(f)).toBe("removed");
  writeFileSync(join(d, "vault", "key"), "data\n");
  expect(removePlaceholder(g)).toBe("kept");
  // Replaced by another file of the same name: not planter's any more.
  writeFileSync(join(d, "h.new"), "");
  renameSync(join(d, "h.new"), h.path);
  expect(removePlaceholder(h)).toBe("kept");
  expect(removePlaceholder(f)).toBe("gone");
  expect(readdirSync(d).sort()).toEqual(["h", "vault"]);
});
