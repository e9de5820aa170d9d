/**
 * A target's address (docs/usage.md "Targets"): `unix:///path`, `lima`, `ssh://[user@]host[:port]
 * [?socket=PATH]` or `https://host[:port]`. Parsed strictly and to plain data: every part that goes
 * on to `ssh`'s command line is checked here, so that no host, user or path can be read by ssh as
 * an option or a second forward.
 */
import { PlanterError } from "../api/errors.ts";

/** Where one endpoint of a target is. */
export type Endpoint =
  | { kind: "unix"; socket: string }
  | { kind: "lima" }
  | { kind: "ssh"; user: string | null; host: string; port: number | null; socket: string | null }
  | { kind: "https"; host: string; port: number };

/** The planterd socket an `ssh://` target reaches when its URL names none: a system install's. */
export const SSH_DEFAULT_SOCKET = "/run/planter/planterd.sock";
/** The port of an `https://` URL without one. */
export const HTTPS_DEFAULT_PORT = 443;

const HINT =
  'a target URL is unix:///PATH, lima, ssh://[USER@]HOST[:PORT][?socket=PATH] or https://HOST[:PORT] (docs/usage.md "Targets")';

function bad(text: string, why: string): PlanterError {
  return new PlanterError("E_USAGE", `bad target URL ${JSON.stringify(text)}: ${why}`, { hint: HINT });
}

// A host name or address as ssh and TLS take it: letters, digits, dots and dashes, never a leading
// dash (ssh would read it as an option); or an IPv6 address in brackets.
const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])$/;
const USER = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/;

/** An absolute socket path with nothing ssh's `-L local:remote` or a shell could misread. */
function socketPath(text: string, path: string): string {
  if (!path.startsWith("/")) throw bad(text, `the socket path must be absolute, not ${JSON.stringify(path)}`);
  if (path.length > 107) throw bad(text, "the socket path is longer than a Unix socket address holds (107 bytes)");
  // ssh's `-L local:remote` splits at a colon, and the remote owner check quotes the path for a shell.
  if (!/^[A-Za-z0-9._/@+%=,~-]+$/.test(path))
    throw bad(
      text,
      "the socket path may hold only letters, digits and . _ / @ + % = , ~ - (no colon, space, quote or control character)",
    );
  if (path.split("/").some((c) => c === ".." || c === "."))
    throw bad(text, "the socket path must not hold . or .. components");
  return path;
}

function port(text: string, raw: string): number {
  if (!/^\d{1,5}$/.test(raw) || Number(raw) < 1 || Number(raw) > 65535)
    throw bad(text, `the port must be a number from 1 to 65535, not ${JSON.stringify(raw)}`);
  return Number(raw);
}

function host(text: string, raw: string): string {
  if (!HOST.test(raw) || raw.includes("..")) throw bad(text, `${JSON.stringify(raw)} is not a host name or address`);
  return raw.toLowerCase();
}

/** The part of an ssh URL after `ssh://`. */
function parseSsh(text: string, rest: string): Endpoint {
  const m = /^(?:([^@/?#]*)@)?([^/?#]*?)(?::(\d*))?(?:\?([^#]*))?$/.exec(rest);
  if (!m) throw bad(text, "an ssh URL is ssh://[USER@]HOST[:PORT][?socket=PATH], with no path or fragment");
  const [, user, h = "", p, query] = m;
  if (user !== undefined && !USER.test(user)) throw bad(text, `${JSON.stringify(user)} is not a user name`);
  let socket: string | null = null;
  if (query !== undefined) {
    const params = new URLSearchParams(query);
    for (const k of params.keys())
      if (k !== "socket") throw bad(text, `unknown parameter ${JSON.stringify(k)} (only socket=PATH)`);
    if (params.getAll("socket").length !== 1) throw bad(text, "socket= must be given once");
    socket = socketPath(text, params.get("socket") ?? "");
  }
  return {
    kind: "ssh",
    user: user ?? null,
    host: host(text, h),
    port: p === undefined ? null : port(text, p),
    socket,
  };
}

/** `text` as an endpoint, or a usage error saying what is wrong with it. Pure. */
export function parseTargetUrl(text: string): Endpoint {
  if (text === "lima") return { kind: "lima" };
  const scheme = /^([a-z]+):\/\//.exec(text)?.[1];
  if (!scheme) throw bad(text, "no scheme (unix://, ssh://, https://) and not lima");
  const rest = text.slice(scheme.length + 3);
  if (scheme === "unix") return { kind: "unix", socket: socketPath(text, rest) };
  if (scheme === "ssh") return parseSsh(text, rest);
  if (scheme === "https") {
    const m = /^([^/?#@]*?)(?::(\d*))?\/?$/.exec(rest);
    if (!m) throw bad(text, "an https URL is https://HOST[:PORT], with no user, path, query or fragment");
    const [, h = "", p] = m;
    return { kind: "https", host: host(text, h), port: p === undefined ? HTTPS_DEFAULT_PORT : port(text, p) };
  }
  throw bad(text, `unknown scheme ${scheme}://`);
}

/** An endpoint as a URL again (the form `target ls` prints and the config keeps). Pure. */
export function formatEndpoint(e: Endpoint): string {
  switch (e.kind) {
    case "lima":
      return "lima";
    case "unix":
      return `unix://${e.socket}`;
    case "ssh":
      return `ssh://${e.user ? `${e.user}@` : ""}${e.host}${e.port ? `:${e.port}` : ""}${e.socket ? `?socket=${e.socket}` : ""}`;
    case "https":
      return `https://${e.host}:${e.port}`;
  }
}
