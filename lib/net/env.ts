/**
 * The variables that point a list job's tools at its egress proxy (plans/design.md "Egress
 * (#15)"): one port on the job's own loopback serves HTTP, CONNECT and SOCKS5.
 */
import { PROXY_PORT } from "./listen.ts";

/**
 * Both spellings: libcurl reads only the lower-case `http_proxy`, others the upper-case ones.
 * `ALL_PROXY` is SOCKS with the proxy resolving names (`socks5h`); `NO_PROXY` keeps the job's
 * own loopback services (in its own namespace) direct; `NODE_USE_ENV_PROXY` makes Node's fetch
 * read the variables.
 */
export function proxyEnv(port = PROXY_PORT): Record<string, string> {
  const http = `http://127.0.0.1:${port}`;
  const socks = `socks5h://127.0.0.1:${port}`;
  const none = "localhost,127.0.0.1,::1";
  return {
    HTTP_PROXY: http,
    HTTPS_PROXY: http,
    http_proxy: http,
    https_proxy: http,
    ALL_PROXY: socks,
    all_proxy: socks,
    NO_PROXY: none,
    no_proxy: none,
    NODE_USE_ENV_PROXY: "1",
  };
}
