/** The network short forms (`--net-allow`, `--net-deny`, `--net-local`, `--net`) and their merge with a policy file. */
import { describe, expect, test } from "bun:test";
import type { PlanterError } from "../../lib/api/errors.ts";
import { type NetShort, netShort, shortNetwork, withShortNetwork } from "../../lib/cli/network.ts";
import type { Policy } from "../../lib/sandbox/policy.ts";

const short = (raw: string[], args: { net?: string; "net-local"?: boolean } = {}) => netShort(raw, args);
const none: NetShort = { allow: [], deny: [], local: false, mode: undefined };
/** The usage error a call throws: its code, message and hint. */
function refusal(f: () => unknown): { code: string; message: string; hint?: string | undefined } {
  try {
    f();
  } catch (e) {
    const err = e as PlanterError;
    return { code: err.code, message: err.message, hint: err.hint };
  }
  throw new Error("expected a refusal");
}

describe("reading the options", () => {
  test("repeatable and comma lists, in order, once each, spaces trimmed; before -- only", () => {
    const s = short([
      "--net-allow",
      "registry.npmjs.org,*.github.com",
      "--net-allow=example.com:8443",
      "--net-deny",
      " gist.github.com , 10.0.0.0/8",
      "--net-allow",
      "registry.npmjs.org",
      "--",
      "--net-allow",
      "not.mine",
    ]);
    expect(s).toEqual({
      allow: ["registry.npmjs.org", "*.github.com", "example.com:8443"],
      deny: ["gist.github.com", "10.0.0.0/8"],
      local: false,
      mode: undefined,
    });
    expect(short([], { net: "none", "net-local": true })).toEqual({ ...none, local: true, mode: "none" });
  });

  test("a bad entry is a usage error naming it and why, as the policy's schema says", () => {
    expect(refusal(() => short(["--net-allow", "ok.example,10.0.0.1/8"]))).toEqual({
      code: "E_USAGE",
      message:
        '--net-allow: "10.0.0.1/8" is not a network entry: 10.0.0.1/8 has bits set past its prefix; did you mean 10.0.0.0/8?',
      hint: 'see docs/sandbox.md "Network" for the entries a list takes',
    });
    for (const bad of ["http://x.example", "a b", "*.", "x.example:99999", "*foo.example", "[::1"]) {
      const r = refusal(() => short(["--net-deny", bad]));
      expect(r.code).toBe("E_USAGE");
      expect(r.message).toStartWith(`--net-deny: ${JSON.stringify(bad)} is not a network entry: `);
    }
  });

  test("an empty entry (a stray comma, an empty value) is refused, not skipped", () => {
    for (const value of ["a.example,", ",a.example", "a.example,,b.example", ""]) {
      expect(refusal(() => short(["--net-allow", value]))).toEqual({
        code: "E_USAGE",
        message: `--net-allow ${JSON.stringify(value)} has an empty entry`,
        hint: "list entries separated by single commas: --net-allow registry.npmjs.org,'*.github.com'",
      });
    }
    expect(refusal(() => short(["--net-allow"])).message).toBe("--net-allow needs a value");
  });
});

describe("the network they make", () => {
  test("nothing given: no network setting at all (the cell's or the config's stands)", () => {
    expect(shortNetwork(none)).toBeUndefined();
    expect(withShortNetwork(undefined, none)).toBeUndefined();
    const file: Policy = { fs_mode: "read_only", network: "host" };
    expect(withShortNetwork(file, none, "p.json")).toBe(file);
  });

  test("--net none|host; a list from allow, deny and local (only the parts given)", () => {
    expect(shortNetwork({ ...none, mode: "host" })).toBe("host");
    expect(shortNetwork({ ...none, mode: "none" })).toBe("none");
    expect(shortNetwork({ ...none, allow: ["a.example"] })).toEqual({ allow: ["a.example"] });
    expect(shortNetwork({ ...none, deny: ["b.example"] })).toEqual({ deny: ["b.example"] });
    expect(shortNetwork({ ...none, local: true })).toEqual({ allow_local: true });
    expect(shortNetwork({ allow: ["a.example"], deny: ["b.example"], local: true, mode: undefined })).toEqual({
      allow: ["a.example"],
      deny: ["b.example"],
      allow_local: true,
    });
  });

  test("--net with a list option is a usage error", () => {
    expect(refusal(() => shortNetwork({ ...none, mode: "host", allow: ["a.example"], local: true }))).toEqual({
      code: "E_USAGE",
      message: "--net host cannot go with --net-allow and --net-local",
      hint: "--net none|host is the whole network setting; --net-allow, --net-deny and --net-local make an allow list",
    });
    expect(refusal(() => shortNetwork({ ...none, mode: "none", deny: ["x.example"] })).message).toBe(
      "--net none cannot go with --net-deny",
    );
  });
});

describe("merged with --policy FILE", () => {
  test("a file without network takes the options' network; its other fields stay", () => {
    const file: Policy = { fs_mode: "read_only", read_only: ["/data"] };
    expect(withShortNetwork(file, { ...none, allow: ["a.example"] }, "p.json")).toEqual({
      fs_mode: "read_only",
      read_only: ["/data"],
      network: { allow: ["a.example"] },
    });
    expect(withShortNetwork(file, { ...none, mode: "host" }, "p.json")).toEqual({ ...file, network: "host" });
  });

  test("two lists join: the entries of both, once each; allow_local from either", () => {
    const file: Policy = { network: { allow: ["a.example", "b.example"], deny: ["x.example"] } };
    expect(
      withShortNetwork(
        file,
        { ...none, allow: ["b.example", "c.example"], deny: ["y.example"], local: true },
        "p.json",
      ),
    ).toEqual({
      network: {
        allow: ["a.example", "b.example", "c.example"],
        deny: ["x.example", "y.example"],
        allow_local: true,
      },
    });
    // A file's list without allow and the options' allow: the options' entries.
    expect(withShortNetwork({ network: { deny: ["x.example"] } }, { ...none, allow: ["a.example"] })).toEqual({
      network: { allow: ["a.example"], deny: ["x.example"] },
    });
    expect(withShortNetwork({ network: { allow_local: true } }, { ...none, deny: ["x.example"] })).toEqual({
      network: { deny: ["x.example"], allow_local: true },
    });
  });

  test("the same none or host twice is no conflict", () => {
    expect(withShortNetwork({ network: "none" }, { ...none, mode: "none" }, "p.json")).toEqual({ network: "none" });
    expect(withShortNetwork({ network: "host" }, { ...none, mode: "host" }, "p.json")).toEqual({ network: "host" });
  });

  test("a file and options that say two things are a usage error naming both", () => {
    const cases: [Policy, NetShort, string][] = [
      [
        { network: "none" },
        { ...none, allow: ["a.example"] },
        'the policy p.json sets network "none", but --net-allow makes it an allow list',
      ],
      [
        { network: "host" },
        { ...none, deny: ["x.example"], local: true },
        'the policy p.json sets network "host", but --net-deny and --net-local make it an allow list',
      ],
      [
        { network: "host" },
        { ...none, mode: "none" },
        'the policy p.json sets network "host", but --net none sets network "none"',
      ],
      [
        { network: { allow: ["a.example"] } },
        { ...none, mode: "host" },
        'the policy p.json sets an allow list, but --net host sets network "host"',
      ],
    ];
    for (const [file, s, message] of cases) {
      expect(refusal(() => withShortNetwork(file, s, "p.json"))).toEqual({
        code: "E_USAGE",
        message,
        hint: "say the network once: in p.json or with the --net options",
      });
    }
    expect(
      refusal(() =>
        withShortNetwork({ network: { allow: ["a.example"], allow_local: false } }, { ...none, local: true }, "p.json"),
      ),
    ).toEqual({
      code: "E_USAGE",
      message: "the policy p.json sets allow_local false and --net-local sets it true",
      hint: "say it once: in p.json or with --net-local",
    });
  });

  test("the joined list is checked whole: at most 1024 entries", () => {
    const many = Array.from({ length: 1000 }, (_, i) => `h${i}.example`);
    const more = Array.from({ length: 30 }, (_, i) => `x${i}.example`);
    const r = refusal(() => withShortNetwork({ network: { allow: many } }, { ...none, allow: more }, "p.json"));
    expect(r).toEqual({
      code: "E_USAGE",
      message: "the network options: × at most 1024 entries → at allow",
      hint: undefined,
    });
  });
});
