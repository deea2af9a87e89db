# One image for every binary: build them all, ship them on distroless.
#
#   docker build -t stormweir .
#   docker build -t ghcr.io/stormweir/stormweir:0.1.0 \
#     --build-arg VERSION=v0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run --rm -p 8080:8080 stormweir        # stormweir run: the whole
#                                                  # pipeline, CRs printed
#
# docker-compose.yml and the Kubernetes manifests (deploy/) pick the stage
# binary per container with its entrypoint or command. Plain Dockerfile
# syntax (no BuildKit-only instructions), so the classic builder builds it
# too.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first: the download layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The build's identity: `stormweir version` and the stormweir_build_info
# metric report it.
ARG VERSION=devel
ARG REVISION=unknown
ARG CREATED=unknown
# Static binaries (no cgo) for an image without libc: receiver, deduper,
# aggregator, writer and stormweir.
RUN CGO_ENABLED=0 go build -trimpath -o /out/ \
      -ldflags="-s -w \
        -X github.com/stormweir/stormweir/pkg/version.Version=${VERSION} \
        -X github.com/stormweir/stormweir/pkg/version.Revision=${REVISION} \
        -X github.com/stormweir/stormweir/pkg/version.Date=${CREATED}" \
      ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=devel
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title=stormweir \
      org.opencontainers.image.description="Alertmanager webhooks and Kubernetes events in, one RemediationRequest per real incident out" \
      org.opencontainers.image.source=https://github.com/stormweir/stormweir \
      org.opencontainers.image.version=${VERSION} \
      org.opencontainers.image.revision=${REVISION} \
      org.opencontainers.image.created=${CREATED}
COPY --from=build /out/ /usr/local/bin/
# Numeric, so a kubelet can check runAsNonRoot without reading the image's
# /etc/passwd (it refuses a user name it cannot verify): 65532 is
# distroless's nonroot user, the runAsUser of deploy/'s pod specs.
USER 65532:65532
# stormweir run keeps its JetStream store and generated token in ./data;
# the nonroot user can write here, not in /.
WORKDIR /home/nonroot
# 8080: webhooks (receiver, stormweir run); 9090: health and metrics of the
# deduper, aggregator and writer.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/stormweir"]
CMD ["run"]
