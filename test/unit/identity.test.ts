import { describe, expect, test } from "bun:test";
import { dropArgv, jobIdentity, parseGroups, parsePasswd } from "../../lib/sandbox/identity.ts";

describe("passwd and group files", () => {
  test("an empty or non-numeric id field is skipped, never read as 0", () => {
    const text =
      "evil:x::5:g:/h:/bin/sh\nodd:x:5x:5::/h:/s\nroot:x:0:0:root:/root:/bin/sh\nok:x:1000:1000::/home/ok:/bin/sh\n";
    expect(parsePasswd(text)).toEqual([
      { name: "root", uid: 0, gid: 0, home: "/root" },
      { name: "ok", uid: 1000, gid: 1000, home: "/home/ok" },
    ]);
  });

  test("groups: digits only, and the first line of a name counts", () => {
    expect([...parseGroups("empty:x::\nplanter:x:7:alice\nplanter:x:8:\nbad:x:-1:\n")]).toEqual([["planter", 7]]);
  });
});

describe("who a job runs as", () => {
  const rootPeer = { uid: 999, gid: 994, groups: [], user: "planter-job", home: null };
  test("a root peer never gets uid 0: the cell's non-root owner, else the root-peer user", () => {
    expect(jobIdentity({ peer: { uid: 0, gid: 0, groups: [0] }, cellOwner: 0, rootPeer })).toEqual(rootPeer);
    expect(jobIdentity({ peer: null, cellOwner: null, rootPeer })).toEqual(rootPeer);
    expect(jobIdentity({ peer: { uid: 0, gid: 0, groups: [] }, cellOwner: 4321, rootPeer }).uid).toBe(4321);
  });

  test("setpriv drops uid, gid and groups, with no_new_privs and no inheritable capabilities", () => {
    expect(dropArgv({ uid: 1000, gid: 1000, groups: [27, 100], user: "u", home: null }, "/usr/bin/setpriv")).toEqual([
      "/usr/bin/setpriv",
      "--reuid=1000",
      "--regid=1000",
      "--groups=27,100",
      "--no-new-privs",
      "--inh-caps=-all",
      "--",
    ]);
    expect(dropArgv({ uid: 1, gid: 1, groups: [], user: null, home: null }, "setpriv")[3]).toBe("--clear-groups");
  });
});
