# Multi-stage build of the operator: a static-enough binary on a distroless, non-root runtime.
#   docker build -t dx-macsec-operator .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source changes do not rebuild them. Cargo reads the file of every
# target Cargo.toml declares, so each gets a stub (the e2e tests are not built: they need a
# feature); tests/build/test_dockerfile.py fails when a declared target is missing here.
COPY Cargo.toml Cargo.lock ./
COPY dx-sim/Cargo.toml dx-sim/Cargo.toml
RUN mkdir -p src dx-sim/src tests && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > dx-sim/src/main.rs && echo '' > dx-sim/src/lib.rs \
    && touch tests/e2e.rs tests/e2e_pods.rs \
    && cargo build --release --locked -p dx-macsec-operator \
    && rm -rf src dx-sim/src
COPY src src
COPY dx-sim/src dx-sim/src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p dx-macsec-operator --bin dx-macsec-operator

# glibc, CA certificates and a nonroot user (65532), nothing else.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/dx-macsec-operator /usr/local/bin/dx-macsec-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/dx-macsec-operator"]
CMD ["run"]
