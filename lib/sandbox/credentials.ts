/**
 * Credential locations hidden from jobs by default (docs/sandbox.md). Each entry is relative to
 * a home directory; it is hidden in the home of whoever the job runs for, in the daemon user's
 * home and in the cell's own home, wherever a bind would otherwise show it. A policy passes one
 * only by naming it (or a path inside it) itself: exposing a whole home never exposes these.
 */
import { readdirSync, realpathSync } from "node:fs";
import { relative } from "node:path";
import { within } from "./paths.ts";

/** Credential paths, relative to a home directory. */
export const CREDENTIAL_PATHS: readonly string[] = [
  ".ssh",
  ".gnupg",
  ".aws",
  ".azure",
  ".config/gcloud",
  ".kube",
  ".docker/config.json",
  ".npmrc",
  ".yarnrc",
  ".yarnrc.yml",
  ".pypirc",
  ".netrc",
  ".authinfo",
  ".authinfo.gpg",
  ".config/glab-cli",
  ".git-credentials",
  ".config/git/credentials",
  ".config/gh",
  ".config/hub",
  ".password-store",
  ".vault-token",
  ".terraform.d/credentials.tfrc.json",
  ".cargo/credentials",
  ".cargo/credentials.toml",
  ".gem/credentials",
  ".pgpass",
  ".my.cnf",
  ".m2/settings.xml",
  ".m2/settings-security.xml",
  ".gradle/gradle.properties",
  ".config/rclone",
  ".s3cfg",
  ".boto",
  ".composer/auth.json",
  ".config/composer/auth.json",
  ".claude/.credentials.json",
  ".claude.json",
  ".codex/auth.json",
  ".gemini/oauth_creds.json",
  ".terraformrc",
  ".pulumi/credentials.json",
  ".oci",
  ".config/doctl",
  ".config/hcloud",
  ".config/op",
  ".databrickscfg",
  ".kaggle",
  ".huggingface",
  ".cache/huggingface/token",
  ".config/netlify",
  ".config/stripe",
  ".ngrok2",
  ".config/ngrok",
  ".sentryclirc",
  ".bundle/config",
  ".nuget/NuGet/NuGet.Config",
  ".fly",
  ".bitcoin",
  ".ethereum/keystore",
  ".electrum",
  ".local/share/keyrings",
  ".pki",
  ".mozilla",
  ".thunderbird",
  ".config/google-chrome",
  ".config/chromium",
  ".config/BraveSoftware",
  ".config/microsoft-edge",
  ".config/vivaldi",
  ".config/opera",
  "snap/firefox",
  "Library/Keychains",
  "Library/Cookies",
  "Library/Application Support/Google/Chrome",
  "Library/Application Support/Firefox",
  ".bash_history",
  ".zsh_history",
  ".zhistory",
  ".history",
  ".sh_history",
  ".python_history",
  ".node_repl_history",
  ".psql_history",
  ".mysql_history",
  ".sqlite_history",
  ".lesshst",
  ".local/share/fish/fish_history",
  ".config/planter",
  // container and cluster clients: TLS keys and tokens for remote daemons and clusters
  ".docker/key.pem",
  ".docker/contexts",
  ".docker/certs.d",
  ".config/containers/auth.json",
  ".minikube",
  ".talos",
  ".config/helm/repositories.yaml",
  ".config/openstack",
  ".config/linode-cli",
  ".android/adbkey",
  // package registries and build tools
  ".config/pip/pip.conf",
  ".pip/pip.conf",
  ".config/pypoetry/auth.toml",
  ".ivy2/.credentials",
  ".sbt/.credentials",
  ".bunfig.toml",
  ".config/configstore",
  // clouds, tunnels, deploy tools, secrets tools
  ".mc",
  ".cloudflared",
  ".wrangler",
  ".config/.wrangler",
  ".supabase",
  ".local/share/com.vercel.cli",
  ".config/sops",
  ".config/tea",
  ".config/Bitwarden CLI",
  ".local/share/kwalletd",
  ".mylogin.cnf",
  // coding assistants
  ".config/github-copilot",
  ".qwen/oauth_creds.json",
  ".config/io.datasette.llm/keys.json",
  // chat and app sessions (a copied session is the account), Flatpak apps' private data
  ".config/Slack",
  ".config/discord",
  ".config/Signal",
  ".config/Element",
  ".local/share/TelegramDesktop",
  ".var/app",
  // more histories
  ".local/share/atuin",
  ".rediscli_history",
  ".dbshell",
];

/** The credential paths under one home directory, absolute. */
export function credentialPaths(home: string): string[] {
  const base = home.endsWith("/") && home !== "/" ? home.slice(0, -1) : home;
  return CREDENTIAL_PATHS.map((p) => `${base}/${p}`);
}

/**
 * Homes a policy's binds show by where they lie, whether or not /etc/passwd names their users
 * (a directory service's users have no line there): each entry of /home or /Users (and their
 * canonical forms, `/home → /var/home`) that a bind lies in, or every entry when a bind holds
 * the root itself.
 */
export function homesShown(binds: string[]): string[] {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return p;
    }
  };
  const roots = [...new Set(["/home", "/Users"].flatMap((r) => [r, real(r)]))];
  const out = new Set<string>();
  for (const b of binds) {
    for (const r of roots) {
      if (b !== r && within(b, r)) out.add(`${r}/${relative(r, b).split("/")[0]}`);
      else if (within(r, b)) {
        try {
          for (const n of readdirSync(r)) out.add(`${r}/${n}`);
        } catch {
          // no such root here
        }
      }
    }
  }
  return [...out];
}
