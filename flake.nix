{
  description = "Backworks plugin toolchain: the SDK, the `backworks` host and `cargo backworks`";

  # The revisions these resolve to are pinned in flake.lock. They were copied,
  # not invented: see the README's "Nix" section for the repository and file
  # they come from. `nix flake update` replaces them with current ones.
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      rust-overlay,
    }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];

      forAllSystems =
        f:
        nixpkgs.lib.genAttrs systems (
          system:
          f (
            import nixpkgs {
              inherit system;
              overlays = [ rust-overlay.overlays.default ];
            }
          )
        );

      # The Rust toolchain is rust-toolchain.toml itself: its channel,
      # components, cross targets (with their standard libraries) and profile,
      # exactly what rustup installs outside nix. Nothing about the toolchain is
      # written here, so the two cannot drift apart.
      toolchainFor = pkgs: pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml;

      version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;

      packagesFor =
        pkgs:
        let
          toolchain = toolchainFor pkgs;
          rustPlatform = pkgs.makeRustPlatform {
            cargo = toolchain;
            rustc = toolchain;
          };
          # One workspace package, built from the whole workspace source (the
          # binaries embed plugin-template/ and docs/ with include_str!).
          workspacePackage =
            {
              pname,
              crate,
              mainProgram,
              description,
            }:
            rustPlatform.buildRustPackage {
              inherit pname version;
              src = pkgs.lib.cleanSource ./.;
              cargoLock.lockFile = ./Cargo.lock;
              cargoBuildFlags = [
                "--package"
                crate
              ];
              # The test suites drive real toolchains (cc, mingw-w64, minisign,
              # cargo building plugins) and open local ports; they run in the
              # dev shell (`cargo test --workspace`), not in the build sandbox.
              doCheck = false;
              meta = {
                inherit description mainProgram;
                license = with pkgs.lib.licenses; [
                  mit
                  asl20
                ];
              };
            };
        in
        rec {
          backworks = workspacePackage {
            pname = "backworks";
            crate = "backworks-host";
            mainProgram = "backworks";
            description = "The Backworks server: loads signed native plugins at run time";
          };
          cargo-backworks = workspacePackage {
            pname = "cargo-backworks";
            crate = "cargo-backworks";
            mainProgram = "cargo-backworks";
            description = "cargo backworks: create, build, check, sign and verify Backworks plugins";
          };
          default = pkgs.symlinkJoin {
            name = "backworks-toolchain-${version}";
            paths = [
              backworks
              cargo-backworks
            ];
          };
          # `cargo fmt --check` and `cargo clippy -D warnings` over the
          # workspace, offline against the vendored Cargo.lock dependencies.
          lint = rustPlatform.buildRustPackage {
            pname = "backworks-lint";
            inherit version;
            src = pkgs.lib.cleanSource ./.;
            cargoLock.lockFile = ./Cargo.lock;
            buildPhase = ''
              runHook preBuild
              cargo fmt --all -- --check
              cargo clippy --workspace --all-targets --locked --offline -- -D warnings
              runHook postBuild
            '';
            doCheck = false;
            installPhase = ''
              touch $out
            '';
          };
        };
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          all = packagesFor pkgs;
        in
        {
          inherit (all) backworks cargo-backworks default;
        }
      );

      checks = forAllSystems (
        pkgs:
        let
          all = packagesFor pkgs;
        in
        {
          inherit (all) backworks cargo-backworks lint;
        }
      );

      devShells = forAllSystems (
        pkgs:
        let
          mingw = pkgs.pkgsCross.mingwW64;
        in
        {
          # What building and testing this repository needs, as scripts/setup
          # installs it on Debian: the pinned toolchain, a C compiler (mkShell's
          # stdenv), mingw-w64, minisign, curl, wrk, zig and cargo-zigbuild.
          default = pkgs.mkShell {
            packages = [
              (toolchainFor pkgs)
              mingw.stdenv.cc
              pkgs.minisign
              pkgs.curl
              pkgs.wrk
              pkgs.zig
              pkgs.cargo-zigbuild
            ]
            ++ pkgs.lib.optionals pkgs.stdenv.hostPlatform.isLinux [ pkgs.procps ];
            # Rust's windows-gnu standard library links libpthread, which the
            # nix mingw-w64 compiler keeps in a separate package.
            CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS = "-L native=${mingw.windows.pthreads}/lib";
          };
        }
      );
    };
}
