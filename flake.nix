{
  description = "nvidia-sidecar: rate-limiting sidecar proxy for OpenAI-compatible LLM APIs";

  # A supported NixOS release branch; the sidecar runs on its nodejs_24 (Node.js 24, an LTS line,
  # the same as the Docker image's; Node.js 20 reached its end of life in April 2026).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      packageJson = lib.importJSON ./package.json;

      # The same build and entry point as `npm start`: `npm run build` bundles into dist/,
      # then node runs bin/nvidia-sidecar.mjs (package.json "bin").
      mkSidecar =
        pkgs:
        let
          nodejs = pkgs.nodejs_24;
          inherit (pkgs) importNpmLock;
        in
        pkgs.buildNpmPackage {
          pname = packageJson.name;
          inherit (packageJson) version;
          inherit nodejs;
          src = lib.cleanSource ./.;

          # Every package comes from package-lock.json (resolved + integrity), no npmDepsHash.
          npmDeps = importNpmLock { npmRoot = ./.; };
          npmConfigHook = importNpmLock.npmConfigHook;
          npmBuildScript = "build";
          # package.json "allowScripts" disables every install script in this tree.
          npmRebuildFlags = [ "--ignore-scripts" ];

          nativeBuildInputs = [ pkgs.makeWrapper ];

          # Only the bundle, the CLI entry point, the dashboard page and package.json are
          # needed at run time (the same set as the Docker image).
          # package.json is copied from the source: the build tree's copy was rewritten by
          # importNpmLock to point at store paths.
          installPhase = ''
            runHook preInstall
            mkdir -p $out/lib/nvidia-sidecar $out/bin
            cp -r bin dist static $out/lib/nvidia-sidecar/
            cp ${./package.json} $out/lib/nvidia-sidecar/package.json
            makeWrapper ${nodejs}/bin/node $out/bin/nvidia-sidecar \
              --add-flags $out/lib/nvidia-sidecar/bin/nvidia-sidecar.mjs \
              --set-default NODE_ENV production
            runHook postInstall
          '';

          meta = {
            inherit (packageJson) description;
            license = lib.licenses.mit;
            mainProgram = "nvidia-sidecar";
            platforms = nodejs.meta.platforms;
          };
        };

      # Mirrors deploy/nvidia-sidecar.service; see the comments there for each choice.
      hardening = {
        DynamicUser = true;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        PrivateMounts = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # V8's JIT needs writable+executable memory.
        MemoryDenyWriteExecute = false;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service @pkey"
          "~@privileged @resources"
        ];
        SystemCallErrorNumber = "EPERM";
        KeyringMode = "private";
        UMask = "0077";
        MemoryMax = "512M";
        LimitNOFILE = 65536;
      };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          sidecar = mkSidecar pkgs;
        in
        {
          default = sidecar;
          nvidia-sidecar = sidecar;
        }
      );

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          meta.description = "Run the nvidia-sidecar proxy (settings from SIDECAR_* variables)";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_24
            pkgs.prometheus.cli # promtool, to check /metrics output
          ]
          ++ lib.optionals pkgs.stdenv.hostPlatform.isLinux [
            pkgs.chromium # for playwright-core dashboard checks
            pkgs.systemd # systemd-analyze verify/security on deploy/nvidia-sidecar.service
          ];
        };
      });

      nixosModules.default =
        {
          config,
          lib,
          pkgs,
          ...
        }:
        let
          cfg = config.services.nvidia-sidecar;
          toEnv = value: if builtins.isBool value then lib.boolToString value else toString value;
        in
        {
          options.services.nvidia-sidecar = {
            enable = lib.mkEnableOption "nvidia-sidecar, a rate-limiting proxy for OpenAI-compatible LLM APIs";

            package = lib.mkOption {
              type = lib.types.package;
              default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
              defaultText = lib.literalExpression "nvidia-sidecar.packages.\${system}.default";
              description = "The nvidia-sidecar package to run.";
            };

            settings = lib.mkOption {
              type =
                with lib.types;
                attrsOf (oneOf [
                  str
                  int
                  bool
                ]);
              default = { };
              example = {
                SIDECAR_RATE_RPM = 60;
                SIDECAR_QUEUE_FULL_POLICY = "drop_lowest";
              };
              description = ''
                Environment variables (SIDECAR_*, OTEL_*; see .env.example). They land in the
                world-readable Nix store: put SIDECAR_API_KEY and SIDECAR_ADMIN_TOKEN in
                `environmentFile` instead.
              '';
            };

            environmentFile = lib.mkOption {
              type = lib.types.nullOr lib.types.str;
              default = null;
              example = "/run/secrets/nvidia-sidecar.env";
              description = ''
                File of KEY=value lines read by systemd before it drops privileges (so it may
                be root-only). A string, not a Nix path, so secrets stay out of the store.
              '';
            };

            configFile = lib.mkOption {
              type = lib.types.nullOr lib.types.path;
              default = null;
              description = "Optional YAML config passed as --config; environment settings override it.";
            };

            redisUrl = lib.mkOption {
              type = lib.types.nullOr lib.types.str;
              default = null;
              example = "redis://10.0.0.5:6379/0";
              description = ''
                SIDECAR_REDIS_URL: the Redis holding the limit shared by every replica with the same
                limit key (README, "Scale out"); null = this host limits alone. A URL with a password
                would land in the world-readable Nix store: set SIDECAR_REDIS_URL in
                `environmentFile` instead. SIDECAR_REDIS_FAILURE and SIDECAR_LIMIT_KEY go in `settings`.
              '';
            };
          };

          config = lib.mkIf cfg.enable {
            assertions = [
              {
                assertion = cfg.redisUrl == null || !(cfg.settings ? SIDECAR_REDIS_URL);
                message = "services.nvidia-sidecar: set the Redis URL once, in redisUrl or in settings.SIDECAR_REDIS_URL";
              }
            ];
            systemd.services.nvidia-sidecar = {
              description = "nvidia-sidecar rate-limiting proxy for OpenAI-compatible LLM APIs";
              after = [ "network-online.target" ];
              wants = [ "network-online.target" ];
              wantedBy = [ "multi-user.target" ];
              startLimitIntervalSec = 60;
              startLimitBurst = 5;
              environment = {
                NODE_ENV = "production";
              }
              // lib.optionalAttrs (cfg.redisUrl != null) { SIDECAR_REDIS_URL = cfg.redisUrl; }
              // lib.mapAttrs (_: toEnv) cfg.settings;
              serviceConfig = hardening // {
                Type = "exec";
                ExecStart = lib.escapeShellArgs (
                  [ (lib.getExe cfg.package) ]
                  ++ lib.optionals (cfg.configFile != null) [
                    "--config"
                    "${cfg.configFile}"
                  ]
                );
                EnvironmentFile = lib.mkIf (cfg.environmentFile != null) cfg.environmentFile;
                # SIGTERM drains in-flight calls for SIDECAR_DRAIN_TIMEOUT (25 s); stop must wait longer.
                KillSignal = "SIGTERM";
                TimeoutStopSec = 35;
                Restart = "on-failure";
                RestartSec = 2;
              };
            };
          };
        };
    };
}
