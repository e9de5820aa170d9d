/** The config file install writes when there is none (on the host, and in the Lima VM's provision script). */
export const DEFAULT_CONFIG = `# planterd configuration — every key is optional; see docs/install.md "Configuration".
[sandbox]
mode = "enforced"   # enforced (fail closed) | permissive | disabled

[authz]
strict = true
`;
