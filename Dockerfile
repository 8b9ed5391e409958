# fhec serve in a container. Build the model artifacts first (`fhec build ... -o models/NAME.fhec`),
# then: docker build -t fhec . && docker run -p 8080:8080 -v fhec-keys:/keys fhec serve /models/NAME.fhec ...
# (see deploy/README.md). The image holds the fhec binary and the server artifacts; never a secret key.
# The binary has both schemes: TFHE, and CKKS (the `ckks` feature: poulpy, which needs a nightly
# compiler; pinned to the nightly fhec is tested with, 2026-05-19).
FROM rust:1.95-slim-bookworm AS build
ARG NIGHTLY=nightly-2026-05-19
RUN rustup toolchain install "$NIGHTLY" --profile minimal
WORKDIR /src
COPY . .
RUN cargo +"$NIGHTLY" build --release --locked -p fhec-cli --features ckks && cp target/release/fhec /usr/local/bin/fhec

FROM debian:bookworm-slim
# ca-certificates: `fhec client` against https servers trusts the system's roots.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --create-home fhec && mkdir -p /keys /models && chown fhec /keys
COPY --from=build /usr/local/bin/fhec /usr/local/bin/fhec
# The compiled models to serve (client artifacts are not needed on the server, but harmless).
COPY models/ /models/
USER 10001
EXPOSE 8080
ENTRYPOINT ["fhec"]
CMD ["serve", "/models/mlp_wine.fhec", "--listen=0.0.0.0:8080", "--store=/keys", "--allow-anonymous"]
