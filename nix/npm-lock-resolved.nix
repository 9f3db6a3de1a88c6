# Put back the `resolved` tarball URLs that npm's `omit-lockfile-registry-resolved` setting
# leaves out of package-lock.json. nixpkgs' importNpmLock fetches each package from its
# `resolved` URL, checked against its `integrity` hash; without `resolved` it skips the
# fetch, and evaluation then fails with "attribute 'resolved' missing".
#
# The URL is the one npm itself derives for a registry package,
#   <registry>/<name>/-/<name without @scope/>-<version>.tgz
# and the lockfile's `integrity` still pins the bytes. Entries that already have `resolved`,
# links, bundled entries and the root entry pass through unchanged, so a lockfile written
# with `resolved` fields goes through as it is.
{ registry ? "https://registry.npmjs.org" }:
packageLock:
let
  inherit (builtins) elemAt match mapAttrs;

  # "node_modules/a/node_modules/@s/b" -> "@s/b"; an alias entry names its real package.
  packageName = path: entry:
    entry.name or (elemAt (match "(.*node_modules/)?((@[^/]+/)?[^/]+)" path) 1);

  fill = path: entry:
    if path == "" || entry ? resolved || entry.link or false || entry.inBundle or false
      || !(entry ? version)
    then entry
    else
      let
        name = packageName path entry;
        file = elemAt (match "(@[^/]+/)?(.+)" name) 1;
      in
      entry // { resolved = "${registry}/${name}/-/${file}-${entry.version}.tgz"; };
in
packageLock // { packages = mapAttrs fill packageLock.packages; }
