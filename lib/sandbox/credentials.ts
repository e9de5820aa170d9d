/**
 * Credential locations hidden from jobs by default (README "Sandbox"). Each entry is relative to
 * a home directory; it is hidden in the home of whoever the job runs for, in the daemon user's
 * home and in the cell's own home, wherever a bind would otherwise show it. A policy passes one
 * only by naming it (or a path inside it) itself: exposing a whole home never exposes these.
 */

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
];

/** The credential paths under one home directory, absolute. */
export function credentialPaths(home: string): string[] {
  const base = home.endsWith("/") && home !== "/" ? home.slice(0, -1) : home;
  return CREDENTIAL_PATHS.map((p) => `${base}/${p}`);
}
